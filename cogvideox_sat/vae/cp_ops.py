"""Context-parallel communication for the VAE's time axis, as small autograd functions.

Each rank of a context-parallel group holds consecutive frames of one clip (dim 2 of
(B, C, T, H, W) tensors). Four operations are needed, each with its exact backward:

- scatter_time / gather_time: cut a replicated clip into this rank's frames and back;
- exchange_halo: the causal convs' past frames come from the previous rank;
- all_reduce_sum: group-norm statistics summed over the group.

Piece sizes may differ between ranks; every rank knows all of them (they follow from the
clip length), so gathers pad to the longest piece and trim, which also suits gloo.
The modules never call these directly: `TimeContext` does, on their behalf.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from cogvideox_sat.distributed import group_rank, group_size

ProcessGroup = Any
TIME_DIM = 2


def _gather_pieces(x: torch.Tensor, sizes: list[int], group: ProcessGroup) -> torch.Tensor:
    """All-gather pieces of different lengths along time and concatenate them."""
    longest = max(sizes)
    pad = longest - x.shape[TIME_DIM]
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:TIME_DIM], pad, *x.shape[TIME_DIM + 1 :])], TIME_DIM)
    buffers = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(buffers, x.contiguous(), group=group)
    return torch.cat([b.narrow(TIME_DIM, 0, n) for b, n in zip(buffers, sizes)], TIME_DIM)


def _local_piece(x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    start = sum(sizes[:rank])
    return x.narrow(TIME_DIM, start, sizes[rank]).contiguous()


class _ScatterTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int], group: ProcessGroup) -> torch.Tensor:
        ctx.sizes, ctx.group = sizes, group
        return _local_piece(x, sizes, group_rank(group))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return _gather_pieces(grad, ctx.sizes, ctx.group), None, None


class _GatherTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int], group: ProcessGroup) -> torch.Tensor:
        ctx.sizes, ctx.group = sizes, group
        return _gather_pieces(x, sizes, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        # Every rank holds the same gathered clip downstream, so each keeps the gradient of its
        # own piece (the Megatron convention for gather/scatter pairs).
        return _local_piece(grad, ctx.sizes, group_rank(ctx.group)), None, None


def _shift_to_next_rank(
    send: torch.Tensor | None, recv_like: torch.Tensor | None, group: ProcessGroup
) -> torch.Tensor | None:
    """Rank r sends `send` to rank r+1 and receives rank r-1's tensor (shaped like `recv_like`)."""
    rank, size = group_rank(group), group_size(group)
    requests = []
    received = None
    if rank + 1 < size and send is not None:
        requests.append(dist.isend(send.contiguous(), dist.get_global_rank(group, rank + 1), group=group))
    if rank > 0 and recv_like is not None:
        received = torch.empty_like(recv_like, memory_format=torch.contiguous_format)
        requests.append(dist.irecv(received, dist.get_global_rank(group, rank - 1), group=group))
    for request in requests:
        request.wait()
    return received


def _shift_to_previous_rank(
    send: torch.Tensor | None, recv_like: torch.Tensor | None, group: ProcessGroup
) -> torch.Tensor | None:
    """Rank r sends `send` to rank r-1 and receives rank r+1's tensor (shaped like `recv_like`)."""
    rank, size = group_rank(group), group_size(group)
    requests = []
    received = None
    if rank > 0 and send is not None:
        requests.append(dist.isend(send.contiguous(), dist.get_global_rank(group, rank - 1), group=group))
    if rank + 1 < size and recv_like is not None:
        received = torch.empty_like(recv_like, memory_format=torch.contiguous_format)
        requests.append(dist.irecv(received, dist.get_global_rank(group, rank + 1), group=group))
    for request in requests:
        request.wait()
    return received


class _ExchangeHalo(torch.autograd.Function):
    """Forward: the last `frames` frames go to the next rank. Backward: their gradient comes back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, frames: int, group: ProcessGroup) -> torch.Tensor:
        ctx.frames, ctx.group, ctx.x_frames = frames, group, x.shape[TIME_DIM]
        rank, size = group_rank(group), group_size(group)
        halo_shape = (*x.shape[:TIME_DIM], frames, *x.shape[TIME_DIM + 1 :])
        tail = x.narrow(TIME_DIM, x.shape[TIME_DIM] - frames, frames) if rank + 1 < size else None
        halo = _shift_to_next_rank(tail, x.new_empty(halo_shape) if rank > 0 else None, group)
        # Rank 0 has no previous rank: an empty halo keeps the autograd graph uniform.
        return halo if halo is not None else x.new_empty(*x.shape[:TIME_DIM], 0, *x.shape[TIME_DIM + 1 :])

    @staticmethod
    def backward(ctx: Any, grad_halo: torch.Tensor) -> tuple:
        rank, size = group_rank(ctx.group), group_size(ctx.group)
        frames = ctx.frames
        like = grad_halo.new_empty(*grad_halo.shape[:TIME_DIM], frames, *grad_halo.shape[TIME_DIM + 1 :])
        grad_tail = _shift_to_previous_rank(
            grad_halo if rank > 0 else None, like if rank + 1 < size else None, ctx.group
        )
        grad_x = grad_halo.new_zeros(*grad_halo.shape[:TIME_DIM], ctx.x_frames, *grad_halo.shape[TIME_DIM + 1 :])
        if grad_tail is not None:
            grad_x.narrow(TIME_DIM, ctx.x_frames - frames, frames).copy_(grad_tail)
        return grad_x, None, None


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        # Each rank's loss reads the same sum, so d(total)/dx_r is the sum of all ranks' grads.
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def scatter_time(x: torch.Tensor, sizes: list[int], group: ProcessGroup) -> torch.Tensor:
    """This rank's frames of a clip every rank holds whole (sizes: frames per rank)."""
    if sum(sizes) != x.shape[TIME_DIM] or len(sizes) != group_size(group):
        raise ValueError(f"cannot cut {x.shape[TIME_DIM]} frames into pieces {sizes} for {group_size(group)} ranks")
    return _ScatterTime.apply(x, sizes, group)


def gather_time(x: torch.Tensor, sizes: list[int], group: ProcessGroup) -> torch.Tensor:
    """The whole clip from every rank's frames (sizes: frames per rank, in rank order)."""
    if x.shape[TIME_DIM] != sizes[group_rank(group)]:
        raise ValueError(f"rank {group_rank(group)} holds {x.shape[TIME_DIM]} frames, expected {sizes}")
    return _GatherTime.apply(x, sizes, group)


def exchange_halo(x: torch.Tensor, frames: int, group: ProcessGroup) -> torch.Tensor:
    """The `frames` frames preceding this rank's piece (held by the previous rank).

    Collective: every rank of the group calls it. Rank 0 gets an empty (T = 0) tensor.
    """
    if group_rank(group) + 1 < group_size(group) and x.shape[TIME_DIM] < frames:
        raise ValueError(f"a causal conv needs {frames} frames of halo but this rank holds {x.shape[TIME_DIM]}")
    return _ExchangeHalo.apply(x, frames, group)


def all_reduce_sum(x: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Sum of `x` over the group, on every rank, with the matching backward."""
    return _AllReduceSum.apply(x, group)


def piece_sizes_of(x: torch.Tensor, group: ProcessGroup) -> list[int]:
    """Frames held by every rank (for pieces the caller cut itself)."""
    mine = torch.tensor([x.shape[TIME_DIM]], dtype=torch.int64, device=x.device)
    every = [torch.empty_like(mine) for _ in range(group_size(group))]
    dist.all_gather(every, mine, group=group)
    return [int(n.item()) for n in every]


class _BroadcastFromFirst(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
        out = x.contiguous().clone()
        dist.broadcast(out, src=dist.get_global_rank(group, 0), group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        # The clip is one replicated input: after gather_time's backward every rank already holds
        # the whole clip's gradient, which is the gradient of its own (identical) copy.
        return grad, None


def broadcast_from_first(x: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Make every rank hold rank 0's `x` (the official wrappers do this before splitting)."""
    return _BroadcastFromFirst.apply(x, group)
