"""Bad samples: why one was skipped, a warning that names it, and per-reason counters.

Training must never stop on one bad file. A loader raises `BadSample(reason, source, detail)`,
the dataset catches it, logs a warning naming the file, counts the reason and moves on.

The counters live in shared memory, one row per loader worker, so the training process can
read what its DataLoader workers skipped (each worker writes only its own row: no lock, no
lost updates). `skip_counts()` sums every live dataset of this process, so a training loop
can log the counts without digging its dataset out of wrappers.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping

import torch

logger = logging.getLogger("cogvideox_sat.data")

# Reasons, in the order the counters store them.
REASONS: tuple[str, ...] = (
    "missing",  # the file (or a tar member it needs) does not exist
    "empty",  # zero bytes
    "too_large",  # bigger than max_file_mb, or frames larger than max_frame_side
    "captionless",  # no caption, or an empty one
    "corrupt",  # the container cannot be opened (truncated, not a video, broken shard)
    "undecodable",  # opened, but its frames cannot be decoded
    "too_short",  # fewer frames than the sampling needs
    "timeout",  # the decoder hung past decode_timeout_s
    "not_cached",  # latent-cache mode, and the cache has no entry for this sample
)

# Row 0 belongs to the main process, rows 1..MAX_WORKERS to DataLoader workers.
MAX_WORKERS = 128


class BadSample(Exception):
    """A sample that must be skipped; `reason` is one of REASONS."""

    def __init__(self, reason: str, source: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {source}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.source = source
        self.detail = detail

    def __reduce__(self):  # rebuilt from its fields when it crosses a DataLoader worker boundary
        return (BadSample, (self.reason, self.source, self.detail))


class NoUsableSamples(RuntimeError):
    """A dataset in which not one sample can be loaded: fail at start, not mid-run."""


class SkipCounter:
    """Per-reason skip counts shared between a dataset and its loader workers."""

    def __init__(self) -> None:
        # a shared-memory tensor survives both fork and spawn DataLoader workers
        self._counts = torch.zeros(MAX_WORKERS + 1, len(REASONS), dtype=torch.int64).share_memory_()
        _LIVE.add(self)

    def add(self, reason: str) -> None:
        self._counts[_worker_row(), REASONS.index(reason)] += 1

    def counts(self) -> dict[str, int]:
        """Skips per reason so far, over this process and its loader workers (zeros left out)."""
        totals = self._counts.sum(dim=0).tolist()
        return {r: int(n) for r, n in zip(REASONS, totals) if n}

    def total(self) -> int:
        return int(self._counts.sum())

    def __getstate__(self) -> dict:
        return {"_counts": self._counts}

    def __setstate__(self, state: dict) -> None:
        self._counts = state["_counts"]
        _LIVE.add(self)


def _worker_row() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % MAX_WORKERS


_LIVE: weakref.WeakSet[SkipCounter] = weakref.WeakSet()


def skip_counts() -> dict[str, int]:
    """Skip counts summed over every dataset alive in this process (for the training log)."""
    totals: dict[str, int] = {}
    seen: set[int] = set()
    for counter in list(_LIVE):
        key = counter._counts.data_ptr()  # a worker's copy shares storage: count it once
        if key in seen:
            continue
        seen.add(key)
        for reason, n in counter.counts().items():
            totals[reason] = totals.get(reason, 0) + n
    return totals


def format_counts(counts: Mapping[str, int]) -> str:
    """`corrupt=2 timeout=1`, or `none` — compact enough for a per-interval log line."""
    return " ".join(f"{k}={v}" for k, v in counts.items()) or "none"


def report_skip(counter: SkipCounter, bad: BadSample) -> None:
    """Count `bad` and warn with the file's name (training goes on with another sample).

    The exception is dropped here for good: its traceback and chained decoder error hold the
    frames that hold the failed decoder, which must be freed now, in this process (a log
    record or a cycle keeping it would free it later, maybe in a forked loader worker, where
    decord crashes). So the log gets a string, and the references are cut.
    """
    counter.add(bad.reason)
    logger.warning("skipping %s", str(bad))
    bad.__traceback__ = bad.__context__ = bad.__cause__ = None
