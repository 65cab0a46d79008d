"""Build a latent cache for WebDataset shards: decode each clip window, encode it, store it.

Per shard the build writes one entry per (sample, window) and then the shard's index (its
usable samples and their entry keys, in shard order), which is all training reads: it never
opens the tar files again. Resumable like the folder build: a shard whose index is written and
whose entries are all present is skipped without reading it; in a shard read again, only the
missing entries are decoded. Shards are decoded in DataLoader workers (a shard per worker at a
time) while the main process encodes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cogvideox_sat.data.cache_builder import BuildReport, encode_entry, entry_metadata, keep_as_is, open_build
from cogvideox_sat.data.encoders import CacheEncoders
from cogvideox_sat.data.latent_cache import LatentCache
from cogvideox_sat.data.shard_keys import shard_index_key, shard_sample_key, window_rng
from cogvideox_sat.data.shards import iter_shard
from cogvideox_sat.data.skips import BadSample

if TYPE_CHECKING:
    from cogvideox_sat.data.webdataset import VideoDataset

logger = logging.getLogger("cogvideox_sat.data")


@dataclass(frozen=True)
class _Shard:
    path: str
    digest: str
    index_key: str


@dataclass
class _Record:
    """What a decoding worker hands the encoder: an item to encode, a present entry, a bad
    sample, or a finished shard's index."""

    kind: str  # "item" | "present" | "bad" | "done"
    key: str | None = None
    item: Any = None
    source: str = ""


class _ShardPixels(IterableDataset):
    def __init__(self, dataset: VideoDataset, shards: list[_Shard], cache: LatentCache, needed: tuple[str, ...], windows: int) -> None:
        self.dataset, self.shards, self.cache, self.needed, self.windows = dataset, shards, cache, needed, windows

    def __iter__(self) -> Iterator[_Record]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        params = self.dataset.pixel_params()
        for shard in self.shards[worker::num_workers]:
            samples: list[dict[str, Any]] = []
            try:
                for raw in iter_shard(shard.path, self.dataset.max_file_bytes, self.dataset.meta_names):
                    keys, source = [], f"{shard.path}#{raw.name}"
                    for window in range(self.windows):
                        key = shard_sample_key(shard.digest, raw.name, window, params)
                        if self.cache.contains(key, self.needed):
                            keys.append(key)
                            yield _Record("present", key, source=source)
                            continue
                        try:
                            item = self.dataset.process(raw, window_rng(raw.name, window))
                        except BadSample as bad:
                            yield _Record("bad", item=bad)
                            continue
                        keys.append(key)
                        yield _Record("item", key, item, source)
                    if keys:
                        samples.append({"name": raw.name, "keys": keys})
            except BadSample as bad:  # a broken shard: index what was read before the break
                yield _Record("bad", item=bad)
            yield _Record("done", shard.index_key, {"shard": shard.path, "windows": self.windows, "samples": samples})


def build_shard_latent_cache(
    dataset: VideoDataset,
    cache_dir: str,
    encoders: CacheEncoders,
    *,
    windows: int = 1,
    num_workers: int = 0,
    store_dtype: torch.dtype | None = None,
    first_frame: bool = True,
    prune: bool = False,
    progress: bool = True,
    part: tuple[int, int] = (0, 1),
) -> BuildReport:
    """Encode `windows` clip windows of every sample in `dataset`'s shards not yet in `cache_dir`.

    `dataset` is a pixel-mode VideoDataset (its params are the training's `data.params`);
    report counts are of (sample, window) entries. first_frame and part (rank, world size: this
    process takes shards rank, rank + world, ...) as in `build_latent_cache`.
    """
    from tqdm import tqdm

    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    cache, needed = open_build(dataset, cache_dir, encoders, first_frame, prune, part)
    params = dataset.pixel_params()
    report = BuildReport()
    # 1. Shards already complete (index with these windows, every entry present) are not read
    todo: list[_Shard] = []
    shards = list(dict.fromkeys(dataset.shards))  # include_dirs weighting repeats shards: cache each once
    for path in tqdm(shards[part[0] :: part[1]], desc="hashing", disable=not progress, unit="shard"):
        try:
            digest = cache.hashes.digest(path)
        except OSError as err:
            report.skip(dataset.skips, BadSample("missing", path, str(err)))
            continue
        shard = _Shard(path, digest, shard_index_key(digest, params))
        report.indexes.append(shard.index_key)
        index = cache.load_index(shard.index_key)
        keys = [k for s in index["samples"] for k in s["keys"]] if index is not None else []
        if index is not None and index.get("windows") == windows and all(cache.contains(k, needed) for k in keys):
            report.total += len(keys)
            report.present += len(keys)
            report.keys += keys
        else:
            todo.append(shard)
    cache.hashes.save()
    # 2. Decode in workers, encode here; a shard's index is written once all its entries are
    loader = DataLoader(_ShardPixels(dataset, todo, cache, needed, windows), batch_size=None, num_workers=num_workers, collate_fn=keep_as_is)
    bar = tqdm(desc="encoding", disable=not progress, unit="clip")
    for record in loader:
        if record.kind == "done":
            cache.save_index(record.key, record.item)
            continue
        if record.kind == "bad":
            report.skip(dataset.skips, record.item)
        else:
            if record.kind == "item":
                cache.save(record.key, encode_entry(record.item, encoders, store_dtype, first_frame), entry_metadata(record.item, record.source))
                report.written += 1
            else:
                report.present += 1
            report.total += 1
            report.keys.append(record.key)
        bar.set_postfix(written=report.written, skipped=sum(report.skipped.values()), refresh=False)
        bar.update(1)
    bar.close()
    if prune:
        logger.info("pruned %d stale cache entries and indexes", cache.prune(report.keys, report.indexes))
    return report
