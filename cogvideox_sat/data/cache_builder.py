"""Build a latent cache for an SFT folder: decode each clip, encode it, store it.

Resumable: entries already in the cache are skipped (they are written atomically, so an
interrupted build leaves none half-written), and file digests are saved as the build goes.
Decoding runs in DataLoader workers while the main process encodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from cogvideox_sat.data.encoders import CacheEncoders
from cogvideox_sat.data.latent_cache import LatentCache
from cogvideox_sat.data.sft_dataset import SFTDataset
from cogvideox_sat.data.skips import BadSample, SkipCounter, format_counts, report_skip

logger = logging.getLogger("cogvideox_sat.data")

_SAVE_HASHES_EVERY = 64


@dataclass
class BuildReport:
    total: int = 0  # samples this build covers (all, or this process's part)
    present: int = 0  # already cached when the build started
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # per reason
    keys: list[str] = field(default_factory=list, repr=False)  # sample keys of the usable samples
    indexes: list[str] = field(default_factory=list, repr=False)  # index keys of the shards (WebDataset builds)

    def __str__(self) -> str:
        return (
            f"{self.total} samples: {self.present} already cached, {self.written} written, "
            f"skipped {format_counts(self.skipped)}"
        )

    def skip(self, counter: SkipCounter, bad: BadSample) -> None:
        """Count a skipped sample here and in the dataset's counter (which also warns)."""
        report_skip(counter, bad)
        self.skipped[bad.reason] = self.skipped.get(bad.reason, 0) + 1


def open_build(
    dataset: Any, cache_dir: str, encoders: CacheEncoders, first_frame: bool, prune: bool, part: tuple[int, int]
) -> tuple[LatentCache, tuple[str, ...]]:
    """The checks every build starts with, then (the cache opened for this process, the tensors
    an entry must hold to count as present)."""
    if dataset.latent_cache is not None:
        raise ValueError("build the cache from a dataset without latent_cache (it must decode pixels)")
    if prune and part[1] > 1:
        raise ValueError("prune in one process after the build: one part does not know the other parts' entries")
    cache = LatentCache.create(cache_dir, encoders.fingerprint, encoders.latent_kind, encoders.description, rank=part[0])
    return cache, ("first_frame",) if first_frame else ()


class _Pixels(Dataset):
    """(index, key, item or BadSample) for the samples still to encode."""

    def __init__(self, dataset: SFTDataset, todo: list[tuple[int, str]]) -> None:
        self.dataset, self.todo = dataset, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, j: int) -> tuple[int, str, Any]:
        i, key = self.todo[j]
        try:
            return i, key, self.dataset.load_pixels(i)
        except BadSample as bad:
            return i, key, bad


def build_latent_cache(
    dataset: SFTDataset,
    cache_dir: str,
    encoders: CacheEncoders,
    *,
    num_workers: int = 0,
    store_dtype: torch.dtype | None = None,
    first_frame: bool = True,
    prune: bool = False,
    progress: bool = True,
    part: tuple[int, int] = (0, 1),
) -> BuildReport:
    """Encode every sample of `dataset` (a pixel-mode SFTDataset) not yet in `cache_dir`.

    part: (rank, world size) of a build split over several processes (e.g. one per GPU under
    torchrun): this one takes samples rank, rank + world, ... (entries are separate files, each
    process keeps its own digest memo); report counts are of those samples.

    first_frame: also store each clip's frame 0 (uint8), which image-to-video training noises
    and encodes at every step. On by default although text-to-video never reads it: it adds
    about 8% to an entry at official sizes (one uint8 480x720 frame beside the fp32 moments of
    49 frames and the T5 embeddings; 16% with bf16 storage), and lets one cache serve a T2V and
    an I2V model that share the VAE and T5 (5B and 5B-I2V do). An entry without it counts as
    missing when first_frame is asked for, so a build for I2V completes a cache built without.
    """
    from tqdm import tqdm

    cache, needed = open_build(dataset, cache_dir, encoders, first_frame, prune, part)
    mine = range(part[0], len(dataset), part[1])
    report = BuildReport(total=len(mine))
    # 1. Keys of every sample (reads each file once; digests are remembered in the cache)
    todo, keys = [], report.keys
    for i in tqdm(mine, desc="hashing", disable=not progress, unit="file"):
        try:
            key = dataset.sample_key(i, cache.hashes)
        except (BadSample, OSError) as err:
            report.skip(dataset.skips, err if isinstance(err, BadSample) else BadSample("missing", dataset.source(i), str(err)))
            continue
        keys.append(key)
        if cache.contains(key, needed):
            report.present += 1
        else:
            todo.append((i, key))
    cache.hashes.save()
    # 2. Decode in workers, encode here, write atomically
    loader = DataLoader(_Pixels(dataset, todo), batch_size=None, num_workers=num_workers, collate_fn=keep_as_is)
    bar = tqdm(total=report.total, initial=report.total - len(todo), desc="encoding", disable=not progress, unit="clip")
    for n, (i, key, item) in enumerate(loader):
        if isinstance(item, BadSample):
            report.skip(dataset.skips, item)
        else:
            cache.save(key, encode_entry(item, encoders, store_dtype, first_frame), entry_metadata(item, dataset.source(i)))
            report.written += 1
        bar.set_postfix(written=report.written, skipped=sum(report.skipped.values()), refresh=False)
        bar.update(1)
        if n % _SAVE_HASHES_EVERY == 0:
            cache.hashes.save()
    bar.close()
    cache.hashes.save()
    # 3. Optionally drop entries this dataset no longer uses (changed files, params, weights)
    if prune:
        removed = cache.prune(keys)
        logger.info("pruned %d stale cache entries", removed)
    return report


def keep_as_is(x: Any) -> Any:
    return x


@torch.no_grad()
def encode_entry(
    item: dict[str, Any], encoders: CacheEncoders, store_dtype: torch.dtype | None, first_frame: bool
) -> dict[str, torch.Tensor]:
    latent = encoders.encode_video(item["mp4"][None])[0]
    text = encoders.encode_text([item["txt"]])[0]
    if store_dtype is not None:
        latent, text = latent.to(store_dtype), text.to(store_dtype)
    tensors = {"latent": latent, "txt_emb": text}
    frame0 = item["mp4"][:1]  # (1, C, H, W)
    if first_frame:
        tensors["first_frame"] = _to_uint8(frame0).permute(1, 0, 2, 3).contiguous()  # (C, 1, H, W), as the engine slices it
    if "image" in item and not (first_frame and torch.equal(item["image"], frame0)):
        tensors["image"] = _to_uint8(item["image"])  # e.g. an images.txt image: not derivable from frame 0
    return tensors


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] back to the exact uint8 it came from: (u - 127.5) / 127.5 inverts without loss."""
    return (x * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)


def entry_metadata(item: dict[str, Any], source: str) -> dict[str, str]:
    return {"caption": item["txt"], "num_frames": str(int(item["num_frames"])), "source": source}
