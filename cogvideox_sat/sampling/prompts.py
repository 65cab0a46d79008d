"""Where prompts come from: a text file (one per line) or stdin, split across data-parallel ranks.

Image-to-video lines read `prompt@@image_path`, as in the official sample_video.py. Each prompt
keeps its line number (`index`): output folders are named after it and per-sample seeds derive
from it, so a prompt gives the same video whichever rank draws it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, TextIO

IMAGE_SEPARATOR = "@@"


@dataclass(frozen=True)
class Prompt:
    """One line of input: its 0-based line number, the text and (image-to-video) the image."""

    index: int
    text: str
    image_path: Optional[str] = None


def parse_prompt(line: str, index: int, image2video: bool) -> Prompt:
    """`text` or, for image-to-video, `text@@image_path` (the image path is required then)."""
    line = line.strip()
    if not image2video:
        return Prompt(index, line)
    text, sep, image_path = line.rpartition(IMAGE_SEPARATOR)
    if not sep or not image_path.strip():
        raise ValueError(
            f"prompt {index}: image-to-video needs 'prompt{IMAGE_SEPARATOR}image_path', got {line[:80]!r}"
        )
    return Prompt(index, text.strip(), image_path.strip())


def read_prompt_file(
    path: str | os.PathLike, image2video: bool, rank: int = 0, world_size: int = 1
) -> Iterator[Prompt]:
    """The prompts of `path` whose line number is `rank` modulo `world_size`; blank lines are
    skipped but still counted, so line numbers (and output names) match the official ones."""
    with Path(path).open(encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            if index % world_size != rank or not line.strip():
                continue
            yield parse_prompt(line, index, image2video)


class LineChannel(Protocol):
    """Hands lines read by one process (`is_source`) to every process, e.g. a broadcast."""

    is_source: bool

    def share(self, line: Optional[str]) -> Optional[str]: ...


def read_stdin(
    image2video: bool,
    rank: int = 0,
    world_size: int = 1,
    stream: Optional[TextIO] = None,
    channel: Optional[LineChannel] = None,
) -> Iterator[Prompt]:
    """Prompts typed on stdin until end of input (Ctrl-D), line `i` to rank `i % world_size`.

    With a `channel` (several processes) only its source reads stdin and every line (None at
    the end) goes to all processes through it; without one this process reads stdin itself.
    Blank lines are skipped but counted, as in files.
    """
    stream = sys.stdin if stream is None else stream
    reads = channel is None or channel.is_source
    interactive = reads and stream.isatty()
    index = 0
    while True:
        line: Optional[str] = None
        if reads:
            if interactive:
                print("Please input English text (Ctrl-D quit): ", end="", flush=True)
            line = stream.readline() or None
        if channel is not None:
            line = channel.share(line)
        if line is None:
            return
        if line.strip() and index % world_size == rank:
            yield parse_prompt(line, index, image2video)
        index += 1
