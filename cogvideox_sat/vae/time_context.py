"""Where one VAE call's frames sit on the clip's time axis: the explicit streaming state.

A causal conv needs the (kernel_t - 1) frames before its input. Where they come from depends
on the call, not on the layer:

- the clip starts here: frame 0 is replicated (the official causal padding);
- a previous chunk was decoded (streaming): its last input frames, carried in `past`;
- context parallelism, rank > 0: the previous rank's last frames (a halo exchange).

Frame 0 is also special in the temporal resampling of the chunk (or rank) that holds it
(`first_frame_separate`). The modules read all this from one `TimeContext` passed down
their forward calls, and write their tails into `next_past` when the caller streams; no
state lives in module attributes (STYLE.md item 9), and no module touches a process group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cogvideox_sat.distributed import group_rank
from cogvideox_sat.vae import cp_ops

ProcessGroup = Any
TIME_DIM = 2


@dataclass
class TimeContext:
    """How the frames of one encoder/decoder call relate to the rest of the clip.

    first_frame_separate: this piece holds frame 0 and the temporal resampling keeps it alone
        (official `fake_cp=True` on context-parallel rank 0).
    past: streaming state in: per causal conv, the last kernel_t - 1 frames of its (padded)
        input in the previous chunk. None: nothing precedes this piece on this process.
    next_past: streaming state out: when a dict, every causal conv stores its tail there.
    group: context-parallel group (None: one process). With a group, ranks > 0 take their
        past frames from the previous rank and group norms may reduce statistics over it.
    """

    first_frame_separate: bool = True
    past: dict[nn.Module, torch.Tensor] | None = None
    next_past: dict[nn.Module, torch.Tensor] | None = field(default=None)
    group: ProcessGroup | None = None

    def __post_init__(self) -> None:
        if self.group is not None and (self.past is not None or self.next_past is not None):
            raise ValueError("streaming (past/next_past) and context parallelism cannot be combined")

    @property
    def rank(self) -> int:
        return group_rank(self.group)

    def preceding_frames(self, conv: nn.Module, x: torch.Tensor, frames: int) -> torch.Tensor:
        """The `frames` frames that precede x (B, C, T, H, W) in time for `conv`: (B, C, frames, H, W)."""
        if frames == 0:
            return x[:, :, :0]
        # 1. Previous rank, previous chunk, or frame 0 replicated.
        halo = cp_ops.exchange_halo(x, frames, self.group) if self.group is not None else None
        if halo is not None and self.rank > 0:
            before = halo
        elif self.past is not None and conv in self.past:
            before = self.past[conv].to(device=x.device, dtype=x.dtype)
        else:
            before = x.narrow(TIME_DIM, 0, 1).expand(-1, -1, frames, -1, -1)
            if halo is not None:
                # Rank 0's halo is empty, but its backward must run: it receives the gradient
                # of the frames this rank sent to rank 1.
                before = torch.cat([halo, before], dim=TIME_DIM)
        # 2. Streaming: the next chunk's past is the tail of cat(before, x).
        if self.next_past is not None:
            padded = x if x.shape[TIME_DIM] >= frames else torch.cat([before, x], TIME_DIM)
            tail = padded[:, :, -frames:]
            self.next_past[conv] = tail.detach().clone()
        return before

    def reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of per-rank partial statistics over the group (identity without one)."""
        return x if self.group is None else cp_ops.all_reduce_sum(x, self.group)
