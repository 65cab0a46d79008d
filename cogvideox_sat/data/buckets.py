"""Buckets: (frames, height, width) shapes listed in the data config, so batches are uniform
without forcing every clip to one size.

Each clip goes to the bucket that crops it least (nearest aspect ratio), among the buckets
whose frame count it can fill at the target fps; ties prefer more frames, then the largest
size that does not upscale. A map-style dataset hands its per-sample bucket ids to
`BucketBatchSampler`; an iterable dataset is wrapped in `BucketBatchedIterable`, which groups
its items by shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, IterableDataset, Sampler, default_collate

Bucket = tuple[int, int, int]  # (frames, height, width)


def parse_buckets(buckets: Any) -> tuple[Bucket, ...]:
    """Validate `buckets` from a config (list of [frames, height, width]; OmegaConf lists ok)."""
    parsed = []
    for b in buckets:
        try:
            f, h, w = (int(v) for v in b)
        except (TypeError, ValueError):
            raise ValueError(f"a bucket is [frames, height, width], got {b!r}") from None
        if f < 1 or (f - 1) % 4:
            raise ValueError(f"bucket {[f, h, w]}: the 3D VAE needs 4k+1 frames; use {f - (f - 1) % 4 if f > 1 else 1} or {f + 4 - (f - 1) % 4}")
        if h <= 0 or w <= 0 or h % 8 or w % 8:
            raise ValueError(f"bucket {[f, h, w]}: height and width must be positive multiples of 8 (VAE /8)")
        parsed.append((f, h, w))
    if not parsed:
        raise ValueError("buckets is empty; list at least one [frames, height, width] or leave it unset")
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"buckets has duplicates: {parsed}")
    return tuple(parsed)


def choose_bucket(buckets: Sequence[Bucket], frames_available: int, height: int, width: int) -> int | None:
    """Index of the bucket for a clip with `frames_available` frames at the target fps, or None."""
    aspect = math.log(width / height)
    best, best_key = None, None
    for i, (f, h, w) in enumerate(buckets):
        if f > frames_available:
            continue
        upscales = h > height or w > width
        key = (round(abs(aspect - math.log(w / h)), 6), -f, upscales, -(h * w))
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices that share a bucket, split over data-parallel ranks.

    Per epoch: shuffle each bucket, cut it into batches, shuffle the batches, deal them to the
    ranks (every rank gets the same number, so no rank waits for a missing step). Same seed and
    epoch give the same batches on every rank.

    Resumable like training.data.ResumableShardSampler: its state is (epoch, batches of the
    epoch already yielded to this rank); iterating to the end moves to the next epoch.
    """

    def __init__(
        self,
        bucket_ids: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.bucket_ids = np.asarray(bucket_ids, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.offset = 0  # batches of this epoch already yielded to this rank
        if len(self._all_batches()) < world_size:
            raise ValueError(
                f"{len(self.bucket_ids)} samples in {len(np.unique(self.bucket_ids))} buckets give fewer "
                f"batches of {batch_size} than the {world_size} data-parallel ranks; lower the batch size or add data"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.offset = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for b in np.unique(self.bucket_ids):
            members = np.flatnonzero(self.bucket_ids == b)
            if self.shuffle:
                members = rng.permutation(members)
            for i in range(0, len(members), self.batch_size):
                chunk = members[i : i + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk.tolist())
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(batches) // self.world_size
        mine = batches[self.rank : per_rank * self.world_size : self.world_size]
        while self.offset < len(mine):
            self.offset += 1
            yield mine[self.offset - 1]
        self.epoch, self.offset = self.epoch + 1, 0

    def __len__(self) -> int:
        return len(self._all_batches()) // self.world_size


def dataset_bucket_ids(dataset: Any) -> np.ndarray | None:
    """Per-sample bucket ids of a bucketed dataset, or of a ConcatDataset of them (None if not bucketed)."""
    if isinstance(dataset, ConcatDataset):
        parts = [dataset_bucket_ids(d) for d in dataset.datasets]
        if all(p is None for p in parts):
            return None
        if any(p is None for p in parts):
            raise ValueError("some datasets are bucketed and some are not; bucket all or none")
        return np.concatenate(parts)
    return getattr(dataset, "bucket_ids", None)


def group_by_shape(items: Iterator[dict], batch_size: int) -> Iterator[dict]:
    """Collated batches of `batch_size` items whose `mp4` (or `latent`) shapes match.

    Items wait in a per-shape queue until their batch is full; leftovers are dropped at the end
    of the stream (an infinite training stream has no end).
    """
    pending: dict[tuple, list[dict]] = {}
    for item in items:
        tensor = item.get("latent", item.get("mp4"))
        key = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ()
        queue = pending.setdefault(key, [])
        queue.append(item)
        if len(queue) == batch_size:
            yield default_collate(queue)
            pending[key] = []


class BucketBatchedIterable(IterableDataset):
    """An iterable dataset whose bucketed items come out as uniform batches.

    Use with `DataLoader(BucketBatchedIterable(ds, batch_size), batch_size=None)`: batching
    happens inside each worker, where the shapes are known.
    """

    def __init__(self, dataset: IterableDataset, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __iter__(self) -> Iterator[dict]:
        return group_by_shape(iter(self.dataset), self.batch_size)
