"""Parallelism of the transformer across GPUs: Ulysses sequence parallelism (see `ulysses`)."""

from cogvideox_sat.parallel.ulysses import (
    SequenceShard,
    all_to_all,
    check_sequence_parallel_degree,
    gather_sequence,
    split_sizes,
)

__all__ = ["SequenceShard", "all_to_all", "check_sequence_parallel_degree", "gather_sequence", "split_sizes"]
