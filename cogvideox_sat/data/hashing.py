"""Content hashes of files, remembered by (size, mtime) so unchanged files are read only once.

The latent cache keys entries by what a file contains, not by its name: a re-encoded video
at the same path gets a new key, a renamed one keeps its key. Hashing every clip at every
start would read the whole dataset, so digests are remembered in a JSON memo next to the
cache, valid while the file's size and modification time are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """blake2b-160 hex digest of the file's bytes."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_of(value: Any) -> str:
    """blake2b-160 of a JSON-serialisable value (dict keys sorted, so order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


class HashMemo:
    """Digests by path, trusted while (size, mtime_ns) match; optionally saved to `path`.

    `also`: other memo files read too (not written), e.g. those of the other processes of a
    build split over several processes, each of which saves only its own file.
    """

    def __init__(self, path: str | os.PathLike | None = None, also: Iterable[str | os.PathLike] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._memo: dict[str, list] = {}
        self._dirty = False
        for memo in [*also, *([self.path] if self.path is not None else [])]:  # own file last: it wins
            self._memo.update(_read_memo(Path(memo)))

    def digest(self, path: str | os.PathLike) -> str:
        key = os.path.abspath(path)
        st = os.stat(key)
        known = self._memo.get(key)
        if known is not None and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        value = file_digest(key)
        self._memo[key] = [st.st_size, st.st_mtime_ns, value]
        self._dirty = True
        return value

    def save(self) -> None:
        """Write the memo atomically (no-op without a path or changes)."""
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._memo))
        os.replace(tmp, self.path)
        self._dirty = False


def _read_memo(path: Path) -> dict[str, list]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged memo only costs re-hashing
