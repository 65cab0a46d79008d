"""Training data loaders: datasets from the `data:` section (weighted, split), a resumable sharded sampler."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from cogvideox_sat.registry import resolve_target


class ResumableShardSampler(Sampler[int]):
    """A seeded per-epoch permutation, sharded over data-parallel ranks, that can start mid-epoch.

    Its state is (epoch, samples already consumed by this rank in the epoch), saved with every
    checkpoint, so a resumed run sees exactly the samples an uninterrupted run would have seen.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if length < world_size:
            raise ValueError(f"dataset has {length} samples, fewer than the {world_size} data-parallel ranks")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.offset = 0  # samples of this epoch already yielded to this rank

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        usable = self.length - self.length % self.world_size  # equal shards: every rank steps together
        return order[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        while self.offset < len(order):
            index = order[self.offset]
            self.offset += 1
            yield index
        self.epoch += 1
        self.offset = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def _create(args: argparse.Namespace, paths: list[str]) -> list[Dataset]:
    """One dataset per path through the data class's official `create_dataset_function`."""
    cfg = args.data_config
    cls = resolve_target(cfg["target"])
    params = dict(cfg.get("params") or {})
    return [cls.create_dataset_function(path, args, **params) for path in paths]


def combine(datasets: list[Dataset], weights: Optional[list[float]], seed: int, rank: int) -> Dataset:
    """Several datasets as one, weighted as SAT does (cogvideox_sat.data.mixing)."""
    from cogvideox_sat.data.mixing import WeightedConcat, WeightedInterleave

    if len(datasets) == 1 and weights is None:
        return datasets[0]
    if all(isinstance(d, IterableDataset) for d in datasets):
        return WeightedInterleave(datasets, weights, seed, rank)
    return WeightedConcat(datasets, weights)


def build_datasets(args: argparse.Namespace, paths: Optional[list[str]], weights: Optional[list[float]] = None, rank: int = 0) -> Optional[Dataset]:
    """The datasets of `paths`, combined with `weights` (one per path, None: all 1)."""
    if not paths:
        return None
    from cogvideox_sat.data.mixing import check_weights

    weights = check_weights(weights, len(paths))
    return combine(_create(args, paths), weights, args.seed, rank)


def build_training_data(args: argparse.Namespace, rank: int, with_valid: bool) -> tuple[Dataset, Optional[Dataset]]:
    """(train set, validation set or None) as SAT's `make_loaders`: `train_data` weighted by
    `train_data_weights`; with `split`, each train_data dataset is cut first (data.split) and its
    valid part validates unless `valid_data` is given; the test part is held out (no test pass)."""
    from cogvideox_sat.data.mixing import check_weights
    from cogvideox_sat.data.split import parse_split, should_split, split_dataset

    weights = check_weights(args.train_data_weights, len(args.train_data or []))
    fractions = parse_split(args.split, args.valid_data is not None, args.test_data is not None)
    if not should_split(fractions):
        train = build_datasets(args, args.train_data, weights, rank)
        return train, build_datasets(args, args.valid_data, None, rank) if with_valid else None
    datasets = _create(args, args.train_data)
    if any(isinstance(d, IterableDataset) for d in datasets):
        raise ValueError(f"args.split {args.split!r}: streamed WebDataset shards cannot be split (officially too); set split: 1,0,0 and give valid_data")
    parts = [split_dataset(d, fractions, args.block_size, args.seed) for d in datasets]
    train = combine([p[0] for p in parts], weights, args.seed, rank)
    if not with_valid:
        return train, None
    if args.valid_data is not None:
        return train, build_datasets(args, args.valid_data, None, rank)
    return train, combine([p[1] for p in parts], weights, args.seed, rank) if fractions[1] > 0 else None


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    rank: int,
    world_size: int,
    seed: int,
    shuffle: bool = True,
    prefetch_factor: Optional[int] = None,
    worker_init_fn: Optional[Callable[[int], None]] = None,
) -> tuple[DataLoader, Optional[Any]]:
    """A loader and its resumable sampler (None for streaming datasets, which cannot seek).

    Bucketed datasets (clips of several frame/size buckets) get a bucket batch sampler, so every
    batch holds one shape; others a per-sample sampler. `worker_init_fn` runs in each worker
    (training passes `preemption.ignore_stop_signals`).
    """
    from cogvideox_sat.data import BucketBatchedIterable, BucketBatchSampler, dataset_bucket_ids

    common = dict(
        num_workers=num_workers,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,  # batches per worker ahead (args.prefetch_factor)
        pin_memory=torch.cuda.is_available(),
        # its own generator: creating an iterator must not draw from the global RNG, or a resumed
        # run's noise would drift from an uninterrupted run's
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=worker_init_fn,
    )
    if isinstance(dataset, IterableDataset):  # WebDataset shards: split by rank/worker inside
        # batched inside each worker, items of one shape per batch (buckets, stills, mixed datasets)
        return DataLoader(BucketBatchedIterable(dataset, batch_size), batch_size=None, **common), None
    bucket_ids = dataset_bucket_ids(dataset)
    if bucket_ids is not None:
        batches = BucketBatchSampler(bucket_ids, batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        return DataLoader(dataset, batch_sampler=batches, **common), batches
    sampler = ResumableShardSampler(len(dataset), rank, world_size, seed, shuffle)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **common), sampler


class BatchStream:
    """Endless batches over epochs, counting what the training loop actually consumed.

    Loader workers prefetch ahead of the loop, so the sampler's own position runs ahead of the
    truth; the resume state comes from what was consumed here instead.
    """

    def __init__(self, loader: DataLoader, sampler: Optional[Any]):
        self.loader, self.sampler = loader, sampler
        self.epoch, self.offset = (sampler.epoch, sampler.offset) if sampler is not None else (0, 0)
        # a batch sampler's position counts batches, a per-sample sampler's counts samples
        self._unit = 1 if loader.batch_sampler is sampler or loader.batch_size is None else loader.batch_size
        self._it: Optional[Iterator[Any]] = None

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Any:
        for _ in range(2):
            if self._it is None:
                if self.sampler is not None:
                    self.sampler.load_state_dict({"epoch": self.epoch, "offset": self.offset})
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch, self.offset = self.epoch + 1, 0
                continue
            self.offset += self._unit
            return batch
        raise RuntimeError("the training data loader produced no batch: the dataset is smaller than one batch per rank")

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._it = None

    def close(self) -> None:
        """Stop the loader's workers now. They ignore the stop signals (preemption.py), so the
        SIGTERM that the interpreter's exit sends them would not end them: after an error, whose
        traceback keeps this stream alive until exit, the process would wait on them forever."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()
