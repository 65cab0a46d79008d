"""DeepSpeed-Ulysses sequence parallelism for the DiT, as small autograd functions.

The P ranks of a sequence-parallel group run the transformer layers on consecutive slices of
the token sequence [text; image]. Everything in a layer is per token except attention, which
needs every token: around it one all-to-all trades the sequence slice for a slice of the heads
(each rank then attends over the whole sequence with heads / P heads), and a second all-to-all
trades back. Hence the degree must divide the head count (30 for 2B, 48 for 5B / 1.5).

Slices may differ by one token (17776 tokens on 3 ranks), so no padding and no mask are
needed; every rank knows every slice's length from the total.

Gradient convention: each rank computes the same loss from the gathered output, and its
autograd graph is its part of one graph for the sum of those P identical losses. So
`gather_sequence`'s backward sums the ranks' gradients (a reduce-scatter) and every parameter
gradient on a rank is a partial sum; the mean over all ranks, which DeepSpeed's data-parallel
averaging computes when it is given no model-parallel unit, is the single-GPU gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cogvideox_sat.distributed import group_rank, group_size

ProcessGroup = Any  # torch.distributed.ProcessGroup


def check_sequence_parallel_degree(num_heads: int, degree: int) -> None:
    """Raise ValueError with the valid choices unless `degree` divides `num_heads`."""
    if degree < 1:
        raise ValueError(f"sequence-parallel degree must be >= 1, got {degree}")
    if num_heads % degree:
        choices = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
        raise ValueError(
            f"sequence-parallel degree {degree} does not divide num_attention_heads {num_heads}: Ulysses gives "
            f"each rank num_heads / degree heads; use a degree in {choices} (model_parallel_size)"
        )


def split_sizes(total: int, parts: int) -> tuple[int, ...]:
    """`total` tokens in `parts` consecutive slices, the first `total % parts` one token longer."""
    if total < parts:
        raise ValueError(f"cannot split {total} tokens over {parts} sequence-parallel ranks")
    base, extra = divmod(total, parts)
    return tuple(base + (1 if i < extra else 0) for i in range(parts))


@dataclass(frozen=True)
class SequenceShard:
    """This rank's slice of one forward call's token sequence (dim 1 of (B, S, ...) tensors)."""

    group: ProcessGroup
    sizes: tuple[int, ...]  # tokens per rank, in rank order
    rank: int

    @classmethod
    def split(cls, total: int, group: ProcessGroup) -> SequenceShard:
        return cls(group, split_sizes(total, group_size(group)), group_rank(group))

    @property
    def start(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def size(self) -> int:
        return self.sizes[self.rank]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def count_in(self, begin: int, end: int) -> int:
        """How many of the global token positions [begin, end) this slice holds."""
        return max(0, min(end, self.start + self.size) - max(begin, self.start))

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's tokens of a (B, S, ...) tensor every rank holds whole (no communication;
        its gradient is zero outside the slice, see the module docstring)."""
        if x.shape[1] != self.total:
            raise ValueError(f"sequence of {x.shape[1]} tokens, the shard was split for {self.total}")
        return x.narrow(1, self.start, self.size)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, s_rank, ...) slices -> the whole (B, S, ...) sequence on every rank."""
        return gather_sequence(x, self)

    def sequence_to_heads(self, x: torch.Tensor, head_dim: int) -> torch.Tensor:
        """(B, s_rank, ..., heads, ...) -> (B, S, ..., heads / P, ...): all tokens, this rank's heads."""
        heads = _even(x.shape[head_dim], len(self.sizes))
        return all_to_all(x, self.group, head_dim, heads, 1, self.sizes)

    def heads_to_sequence(self, x: torch.Tensor, head_dim: int) -> torch.Tensor:
        """Inverse of `sequence_to_heads`: (B, S, ..., heads / P, ...) -> (B, s_rank, ..., heads, ...)."""
        heads = (x.shape[head_dim],) * len(self.sizes)
        return all_to_all(x, self.group, 1, self.sizes, head_dim, heads)


def _even(n: int, parts: int) -> tuple[int, ...]:
    check_sequence_parallel_degree(n, parts)
    return (n // parts,) * parts


# ---------------------------------------------------------------- all-to-all


def _exchange(
    x: torch.Tensor,
    group: ProcessGroup,
    scatter_dim: int,
    scatter_sizes: tuple[int, ...],
    gather_dim: int,
    gather_sizes: tuple[int, ...],
) -> torch.Tensor:
    """Send piece j of `x` (cut along scatter_dim) to rank j; concatenate the pieces received
    from ranks 0..P-1 along gather_dim. One `all_to_all_single` (NCCL and gloo alike)."""
    rank = group_rank(group)
    if x.shape[gather_dim] != gather_sizes[rank] or x.shape[scatter_dim] != sum(scatter_sizes):
        raise ValueError(
            f"all-to-all: rank {rank} holds {tuple(x.shape)}; expected {gather_sizes[rank]} on dim {gather_dim} "
            f"and {sum(scatter_sizes)} on dim {scatter_dim}"
        )
    pieces = x.split(list(scatter_sizes), dim=scatter_dim)
    send = torch.cat([p.reshape(-1) for p in pieces])
    shapes = []
    for n in gather_sizes:
        shape = list(x.shape)
        shape[scatter_dim], shape[gather_dim] = scatter_sizes[rank], n
        shapes.append(shape)
    recv_counts = [math.prod(s) for s in shapes]
    recv = x.new_empty(sum(recv_counts))
    dist.all_to_all_single(recv, send, recv_counts, [p.numel() for p in pieces], group=group)
    return torch.cat([r.view(s) for r, s in zip(recv.split(recv_counts), shapes)], dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: ProcessGroup, scatter_dim: int, scatter_sizes: tuple, gather_dim: int, gather_sizes: tuple) -> torch.Tensor:
        ctx.args = (group, scatter_dim, scatter_sizes, gather_dim, gather_sizes)
        return _exchange(x, group, scatter_dim, scatter_sizes, gather_dim, gather_sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        # The adjoint of a permutation of pieces is the inverse permutation: the same exchange
        # with the roles of the two dimensions swapped.
        group, scatter_dim, scatter_sizes, gather_dim, gather_sizes = ctx.args
        return _exchange(grad.contiguous(), group, gather_dim, gather_sizes, scatter_dim, scatter_sizes), None, None, None, None, None


def all_to_all(
    x: torch.Tensor,
    group: ProcessGroup,
    scatter_dim: int,
    scatter_sizes: tuple[int, ...],
    gather_dim: int,
    gather_sizes: tuple[int, ...],
) -> torch.Tensor:
    """Autograd-aware all-to-all: cut `x` along scatter_dim (piece j to rank j), concatenate what
    arrives along gather_dim. Collective: every rank of `group` calls it with the same sizes."""
    scatter_dim, gather_dim = scatter_dim % x.dim(), gather_dim % x.dim()
    return _AllToAll.apply(x, group, scatter_dim, tuple(scatter_sizes), gather_dim, tuple(gather_sizes))


# ---------------------------------------------------------------- gather


def _gather(x: torch.Tensor, sizes: tuple[int, ...], group: ProcessGroup) -> torch.Tensor:
    """All-gather slices of different lengths along dim 1 (padded to the longest, then trimmed)."""
    longest = max(sizes)
    if x.shape[1] < longest:
        x = torch.cat([x, x.new_zeros(x.shape[0], longest - x.shape[1], *x.shape[2:])], dim=1)
    buffers = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(buffers, x.contiguous(), group=group)
    return torch.cat([b.narrow(1, 0, n) for b, n in zip(buffers, sizes)], dim=1)


class _GatherSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
        ctx.shard = shard
        return _gather(x, shard.sizes, shard.group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        # Every rank's loss reads the whole gathered sequence: this slice's gradient is the sum of
        # all ranks' gradients for it (all-reduce, then keep the slice; gloo has no reduce-scatter).
        shard = ctx.shard
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=shard.group)
        return grad.narrow(1, shard.start, shard.size).contiguous(), None


def gather_sequence(x: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """The whole (B, S, ...) sequence on every rank from each rank's (B, s_rank, ...) slice."""
    if x.shape[1] != shard.size:
        raise ValueError(f"rank {shard.rank} holds {x.shape[1]} tokens, its slice is {shard.size} of {shard.sizes}")
    return _GatherSequence.apply(x, shard)
