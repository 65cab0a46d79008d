"""`args.split`: train_data cut into train / valid / test parts, as SwissArmyTransformer does.

`parse_split` is SAT's `get_split`: "949,50,1" (or "949/50/1", or one number; fewer than three
are padded with 0, a sum below 1 gets the rest as a last part) -> three fractions summing to 1,
with the valid part set to 0 when `valid_data` is given and the test part when `test_data` is.
A split is taken only when more than one part is non-zero (`should_split`).

`split_dataset` is SAT's blocked random split, per train_data dataset and before weighting:
one permutation of `range(block_size)` from `numpy.random.default_rng(seed)` (args.seed, the
same on every rank) is cut into consecutive runs of `block_size * fraction` positions (each
non-zero part gets at least one; fractional remainders carry over to the next part), and each
block of `block_size` samples gives every part the samples at its positions. The same seed and
dataset give the same parts on every run and every rank. Officially a dataset smaller than
`block_size` fails an assert; here it is an error that says which `block_size` to set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset


def parse_split(split: str, has_valid_data: bool = False, has_test_data: bool = False) -> list[float]:
    """[train, valid, test] fractions of `split` (SAT `get_split`); ValueError naming the fix."""
    text = str(split).strip()
    sep = "," if "," in text else "/" if "/" in text else None
    try:
        parts = [float(s) for s in (text.split(sep) if sep else [text])]
    except ValueError:
        raise ValueError(f"split {split!r}: give comma-separated proportions of train, valid, test, e.g. 949,50,1") from None
    if any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ValueError(f"split {split!r}: proportions must be >= 0 with a positive sum, e.g. 949,50,1")
    if sum(parts) < 1:
        parts.append(1 - sum(parts))
    parts = (parts + [0.0, 0.0])[:3]
    if has_valid_data:
        parts[1] = 0.0
    if has_test_data:
        parts[2] = 0.0
    if parts[0] <= 0:
        raise ValueError(f"split {split!r} leaves no training data; give the train part first, e.g. 949,50,1 (or 1,0,0: no split)")
    total = sum(parts)
    return [p / total for p in parts]


def should_split(fractions: list[float]) -> bool:
    return max(fractions) / sum(fractions) != 1.0


def split_positions(fractions: list[float], block_size: int, seed: int) -> list[np.ndarray | None]:
    """Per part, the sorted positions inside each block it takes (None for a zero part)."""
    order = np.random.default_rng(seed).permutation(np.arange(block_size))
    start, residual, out = 0, 0.0, []
    for f in fractions:
        if f == 0:
            out.append(None)
            continue
        proportion = block_size * f
        residual += proportion % 1
        count = int(int(proportion) + residual)
        out.append(np.sort(order[start : start + max(count, 1)]))
        start += count
        residual %= 1
    return out


class BlockedSplit(Dataset):
    """One part of a dataset under the blocked split: index k reads sample
    `(k // p) * block_size + positions[k % p]` (p positions per block), the last partial block
    contributing the positions that fall inside it."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, block_size: int) -> None:
        super().__init__()
        self.dataset, self.positions, self.block_size = dataset, positions, block_size
        n = len(dataset)
        self.length = len(positions) * (n // block_size) + int(np.sum(positions < n % block_size))
        ids, self.shapes = getattr(dataset, "bucket_ids", None), getattr(dataset, "shapes", None)
        self.bucket_ids = None if ids is None else np.asarray(ids)[self.source_indices()]

    def source_indices(self) -> np.ndarray:
        k = np.arange(self.length)
        return (k // len(self.positions)) * self.block_size + self.positions[k % len(self.positions)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        p = len(self.positions)
        return self.dataset[int((index // p) * self.block_size + self.positions[index % p])]


def split_dataset(dataset: Dataset, fractions: list[float], block_size: int, seed: int) -> list[BlockedSplit | None]:
    """[train, valid, test] parts of `dataset` (None for a zero part)."""
    if block_size > len(dataset):
        raise ValueError(
            f"args.split cuts blocks of block_size={block_size} samples but a train_data dataset has {len(dataset)}; "
            f"set args.block_size to at most {len(dataset)} (e.g. block_size: {len(dataset)}), or split: 1,0,0 to train on all of it"
        )
    return [None if pos is None else BlockedSplit(dataset, pos, block_size) for pos in split_positions(fractions, block_size, seed)]
