"""Several `train_data` datasets as one, weighted by `args.train_data_weights` (official semantics).

Folders (map-style datasets), as SwissArmyTransformer's `ConcatDataset(datasets, weights)`:
dataset i contributes `int(len_i * w_i)` indices to each epoch, index k of them reading its
sample `k % len_i`. A weight is a repeat factor of the dataset's samples, so its share of the
samples is `w_i * len_i / sum_j(w_j * len_j)` (weight 0 leaves a dataset out). No weights: a
plain concatenation. Order, shuffling and the resume position stay with the training sampler,
which sees one index space.

Shards (iterable datasets), as SAT's `AlterDataset`: each sample comes from dataset i with
probability `w_i / sum(w)`, drawn from a generator seeded per (seed, data-parallel rank, loader
worker); a dataset that ends is dropped and the others continue.

Shapes: a mixed dataset exposes `shapes` and per-index `bucket_ids` (see SFTDataset) over the
union of its parts' shapes, so the bucket batch sampler keeps each batch to one shape (stills
apart from videos, each bucket apart).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info


def check_weights(weights: Sequence[float] | None, num_datasets: int) -> list[float] | None:
    """`train_data_weights` for `num_datasets` datasets (None: all 1); ValueError with the fix."""
    if weights is None:
        return None
    weights = list(weights)
    if len(weights) != num_datasets:
        raise ValueError(f"train_data_weights has {len(weights)} entries for {num_datasets} train_data datasets; give one weight per dataset")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"train_data_weights {weights}: weights must be >= 0 and at least one > 0")
    return weights


def shape_ids(dataset: Any) -> tuple[np.ndarray | None, list[tuple[int, ...]] | None]:
    """(per-sample shape ids or None when uniform, shape table or None when unknown) of a dataset."""
    return getattr(dataset, "bucket_ids", None), getattr(dataset, "shapes", None)


def merge_shape_ids(parts: Sequence[tuple[np.ndarray | None, list | None, np.ndarray]]) -> tuple[np.ndarray | None, list]:
    """One id space for several datasets' shapes. `parts`: (ids or None, shapes, sample indices
    taken from that dataset). Returns (ids or None when every index has the one same shape, shapes)."""
    table: list = []
    ids = []
    for part_ids, shapes, taken in parts:
        if shapes is None:
            if part_ids is not None:
                raise ValueError("a bucketed dataset without a `shapes` table cannot be mixed")
            shapes = [None]  # unknown but uniform: its own shape
        local = np.zeros(len(taken), dtype=np.int64) if part_ids is None else np.asarray(part_ids)[taken]
        remap = []
        for shape in shapes:
            if shape is None or shape not in table:
                table.append(shape)
                remap.append(len(table) - 1)
            else:
                remap.append(table.index(shape))
        ids.append(np.asarray(remap, dtype=np.int64)[local] if len(local) else local)
    if len(table) == 1:
        return None, table
    return np.concatenate(ids), table


class WeightedConcat(Dataset):
    """Map-style datasets concatenated with official SAT weights (repeat factors, see module doc)."""

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not datasets:
            raise ValueError("no dataset to concatenate")
        self.datasets = list(datasets)
        self.weights = list(weights) if weights is not None else [1] * len(self.datasets)
        self.sizes = [int(len(d) * w) for d, w in zip(self.datasets, self.weights)]
        if sum(self.sizes) == 0:
            raise ValueError(f"train_data_weights {self.weights} leave no sample (sizes {[len(d) for d in self.datasets]})")
        self.cumulative = np.cumsum(self.sizes).tolist()
        parts = [(*shape_ids(d), np.arange(n) % max(len(d), 1)) for d, n in zip(self.datasets, self.sizes)]
        self.bucket_ids, self.shapes = merge_shape_ids(parts)

    def __len__(self) -> int:
        return self.cumulative[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset number, sample index in it) of a concatenated index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        d = bisect.bisect_right(self.cumulative, index)
        start = self.cumulative[d - 1] if d else 0
        return d, (index - start) % len(self.datasets[d])

    def __getitem__(self, index: int) -> Any:
        d, i = self.locate(index)
        return self.datasets[d][i]


class WeightedInterleave(IterableDataset):
    """Iterable datasets interleaved at random with probabilities `w_i / sum(w)` (official AlterDataset)."""

    def __init__(self, datasets: Sequence[IterableDataset], weights: Sequence[float] | None = None, seed: int = 0, rank: int = 0) -> None:
        super().__init__()
        self.datasets = list(datasets)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.datasets)
        self.seed, self.rank = seed, rank

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random(f"mix/{self.seed}/{self.rank}/{worker}")
        live = [(iter(d), w) for d, w in zip(self.datasets, self.weights) if w > 0]
        while live:
            k = rng.choices(range(len(live)), weights=[w for _, w in live])[0]
            try:
                yield next(live[k][0])
            except StopIteration:
                del live[k]



def leaves(dataset: Any) -> list[Any]:
    """The datasets a mixed / split dataset reads from (the dataset itself when it is neither)."""
    inner = getattr(dataset, "datasets", None) or ([dataset.dataset] if hasattr(dataset, "dataset") else None)
    if inner is None:
        return [dataset]
    return [leaf for d in inner for leaf in leaves(d)]
