"""Evaluating per-frame or causal-in-time operations over slices of the time axis.

A full-resolution decoder activation of a 49 x 480 x 720 clip holds 2.2e9 elements (4.3 GiB
in bf16; 81 x 768 x 1360: 21.6 GiB). Ops applied to such tensors in one call need full-size
temporaries (a time-padded copy, a modulation factor, an upsampled copy) and can exceed
int32 indexing in some kernels. Here such ops run on time slices of at most
`MAX_SLICE_ELEMENTS` input elements, writing into one preallocated output when no autograd
graph is recorded (with autograd, the slices are concatenated). Every output frame is
computed from exactly the inputs it would see in one call, so results are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TIME_DIM = 2
# Slices hold at most this many input elements (1 GiB of bf16): large enough for efficient
# GPU kernels, small next to the tensors being sliced. The official SafeConv3d slices
# convolutions above 2**30 elements, too.
MAX_SLICE_ELEMENTS = 2**29


def frame_elements(x: torch.Tensor) -> int:
    return x[:, :, :1].numel() if x.shape[TIME_DIM] else 0


def slice_bounds(frames: int, frames_per_slice: int) -> list[tuple[int, int]]:
    step = max(1, frames_per_slice)
    return [(s, min(s + step, frames)) for s in range(0, frames, step)]


def needs_slicing(x: torch.Tensor, extra_frames: int = 0) -> bool:
    return frame_elements(x) * (x.shape[TIME_DIM] + extra_frames) > MAX_SLICE_ELEMENTS


def over_time(
    frames: int,
    frames_per_slice: int,
    compute: Callable[[int, int], torch.Tensor],
) -> torch.Tensor:
    """cat([compute(s, e) for each slice], time) without holding slices and result at once.

    `compute(s, e)` returns output frames s..e-1 (B, C, e-s, H, W). Without autograd the
    slices are copied into one preallocated output as they come.
    """
    bounds = slice_bounds(frames, frames_per_slice)
    first = compute(*bounds[0])
    if len(bounds) == 1:
        return first
    if first.requires_grad:
        return torch.cat([first] + [compute(s, e) for s, e in bounds[1:]], dim=TIME_DIM)
    out = first.new_empty(*first.shape[:TIME_DIM], frames, *first.shape[TIME_DIM + 1 :])
    out.narrow(TIME_DIM, 0, first.shape[TIME_DIM]).copy_(first)
    del first
    for s, e in bounds[1:]:
        out.narrow(TIME_DIM, s, e - s).copy_(compute(s, e))
    return out


def causal_conv_over_time(
    conv: Callable[[torch.Tensor], torch.Tensor], before: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """conv(cat([before, x], time)) for a conv without time padding whose kernel spans
    before.shape[2] + 1 frames: output frame t sees before/x frames t .. t + k - 1."""
    k1 = before.shape[TIME_DIM]
    if not needs_slicing(x, k1):
        return conv(torch.cat([before, x], dim=TIME_DIM) if k1 else x)

    def compute(s: int, e: int) -> torch.Tensor:
        if s >= k1:
            return conv(x[:, :, s - k1 : e])
        return conv(torch.cat([before[:, :, s:], x[:, :, :e]], dim=TIME_DIM))

    per_slice = MAX_SLICE_ELEMENTS // max(frame_elements(x), 1) - k1
    return over_time(x.shape[TIME_DIM], per_slice, compute)


def per_frame_over_time(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """fn(x) for an fn that treats every frame independently, in slices if x is huge."""
    if not needs_slicing(x):
        return fn(x)
    per_slice = MAX_SLICE_ELEMENTS // max(frame_elements(x), 1)
    return over_time(x.shape[TIME_DIM], per_slice, lambda s, e: fn(x[:, :, s:e]))
