"""Latent-cache keys of WebDataset shards and of the clip windows cached from them.

A shard is identified by its content digest (renaming or moving it keeps its entries); its
index and each entry also depend on the preprocessing (`VideoDataset.pixel_params()`), so a
change of size, fps or frame count is a cache miss, never a stale read. The official stream
draws a new clip start at every visit; a cache keeps `windows` starts per clip, drawn once
from the sample's name, and training picks one of them per visit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from cogvideox_sat.data.hashing import digest_of


@dataclass(frozen=True)
class CachedSample:
    """A sample of a cached shard: its name and the cache keys of its clip windows."""

    name: str
    keys: tuple[str, ...]


def shard_index_key(shard_digest: str, pixel_params: dict[str, Any]) -> str:
    """What a shard's index depends on, apart from the model weights."""
    return digest_of({"shard": shard_digest, "pixels": pixel_params})


def shard_sample_key(shard_digest: str, name: str, window: int, pixel_params: dict[str, Any]) -> str:
    """What the entry of window `window` of sample `name` depends on, apart from the model weights."""
    return digest_of({"shard": shard_digest, "sample": name, "window": window, "pixels": pixel_params})


def window_rng(name: str, window: int) -> random.Random:
    """The draw of a cached window's start: fixed by sample name and window number, so a resumed
    or repeated build picks the same frames whatever the run's seed."""
    return random.Random(digest_of({"sample": name, "window": window}))
