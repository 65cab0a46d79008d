"""Per-token adaLN arithmetic over the [text; image] sequence, without split-and-concat copies.

Every CogVideoX layer modulates its two LayerNorm outputs and adds two gated residuals with
one (shift, scale, gate) for the L text rows and another for the image rows. Written as
`cat(f(x[:, :L]), g(x[:, L:]))` (the official form) that costs a full copy per call in forward
and zero-filled slice gradients plus a sum in backward, four times per layer. Here:

- eager: small autograd functions write both row ranges straight into one output tensor and
  compute gradients the same way (same operations per element, so the same bits as the
  split form; the residual's gradient passes through with no copy);
- under `torch.compile`: each row range computed on its slice and joined with one `cat`, which
  the compiler writes in place (no copy) and fuses with the surrounding LayerNorm/residual work.
  A `where` over a text-row mask (or a 0/1 mask blend) is the same in forward, but its backward
  reduces masked rows, and inductor's kernels for that gave non-finite adaLN/time-embedding
  gradients on an H100 (torch 2.11, 49x480x720 clips, at random); slices reduce unmasked rows.
"""

from __future__ import annotations

from typing import Any

import torch

Pair = tuple[torch.Tensor, torch.Tensor]


def modulate_segments(x: torch.Tensor, text_length: int, text: Pair, image: Pair) -> torch.Tensor:
    """x * (1 + scale) + shift with (shift, scale) = `text` on rows < text_length, else `image`;
    x is (B, S, D), each shift/scale (B, 1, D)."""
    tensors = (x, *text, *image)
    if torch.compiler.is_compiling() or not _same_dtype(tensors):
        pairs = (text, image)
        return _join([x[:, rows] * (1 + pairs[which][1]) + pairs[which][0] for rows, which in _row_ranges(x.shape[1], text_length)])
    return _ModulateSegments.apply(x, text_length, *text, *image)


def gated_residual_segments(
    hidden: torch.Tensor, update: torch.Tensor, text_length: int, text_gate: torch.Tensor, image_gate: torch.Tensor
) -> torch.Tensor:
    """hidden + gate * update with `text_gate` on rows < text_length, else `image_gate`."""
    if torch.compiler.is_compiling() or not _same_dtype((hidden, update, text_gate, image_gate)):
        gates = (text_gate, image_gate)
        return hidden + _join([gates[which] * update[:, rows] for rows, which in _row_ranges(hidden.shape[1], text_length)])
    return _GatedResidualSegments.apply(hidden, update, text_length, text_gate, image_gate)


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _same_dtype(tensors: tuple[torch.Tensor, ...]) -> bool:
    return all(t.dtype == tensors[0].dtype for t in tensors)


def _row_ranges(length: int, text_length: int) -> list[tuple[slice, int]]:
    """(rows, which) for the non-empty text (0) and image (1) row ranges."""
    cut = min(max(text_length, 0), length)
    return [(rows, which) for rows, which in ((slice(0, cut), 0), (slice(cut, length), 1)) if rows.stop > rows.start]


class _ModulateSegments(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, text_length, text_shift, text_scale, image_shift, image_scale):
        ranges = _row_ranges(x.shape[1], text_length)
        scales = (1 + text_scale, 1 + image_scale)
        shifts = (text_shift, image_shift)
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        for rows, which in ranges:
            torch.mul(x[:, rows], scales[which], out=out[:, rows])
            out[:, rows].add_(shifts[which])
        ctx.ranges = ranges
        ctx.scale_shapes = (text_scale.shape, image_scale.shape)
        ctx.shift_shapes = (text_shift.shape, image_shift.shape)
        need_x = ctx.needs_input_grad[3] or ctx.needs_input_grad[5]  # a scale's gradient needs x
        ctx.save_for_backward(x if need_x else None, *scales)
        return out

    @staticmethod
    def backward(ctx: Any, grad):
        x, *scales = ctx.saved_tensors
        grads: list[torch.Tensor | None] = [None] * 6
        if ctx.needs_input_grad[0]:
            grads[0] = torch.empty_like(grad, memory_format=torch.contiguous_format)
            for rows, which in ctx.ranges:
                torch.mul(grad[:, rows], scales[which], out=grads[0][:, rows])
        for rows, which in ctx.ranges:
            shift_index, scale_index = 2 + 2 * which, 3 + 2 * which
            if ctx.needs_input_grad[shift_index]:
                grads[shift_index] = grad[:, rows].sum_to_size(ctx.shift_shapes[which])
            if ctx.needs_input_grad[scale_index]:
                grads[scale_index] = (grad[:, rows] * x[:, rows]).sum_to_size(ctx.scale_shapes[which])
        return tuple(grads)


class _GatedResidualSegments(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden, update, text_length, text_gate, image_gate):
        ranges = _row_ranges(hidden.shape[1], text_length)
        gates = (text_gate, image_gate)
        out = torch.empty_like(hidden, memory_format=torch.contiguous_format)
        for rows, which in ranges:
            torch.mul(gates[which], update[:, rows], out=out[:, rows])
            out[:, rows].add_(hidden[:, rows])
        ctx.ranges = ranges
        ctx.gate_shapes = (text_gate.shape, image_gate.shape)
        need_update = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]  # a gate's gradient needs update
        ctx.save_for_backward(update if need_update else None, text_gate, image_gate)
        return out

    @staticmethod
    def backward(ctx: Any, grad):
        update, *gates = ctx.saved_tensors
        grads: list[torch.Tensor | None] = [None] * 5
        grads[0] = grad if ctx.needs_input_grad[0] else None  # the residual passes through unchanged
        if ctx.needs_input_grad[1]:
            grads[1] = torch.empty_like(grad, memory_format=torch.contiguous_format)
            for rows, which in ctx.ranges:
                torch.mul(grad[:, rows], gates[which], out=grads[1][:, rows])
        for rows, which in ctx.ranges:
            if ctx.needs_input_grad[3 + which]:
                grads[3 + which] = (grad[:, rows] * update[:, rows]).sum_to_size(ctx.gate_shapes[which])
        return tuple(grads)

