"""`Basic3DPositionEmbeddingMixin`: the fixed 3D sin-cos table added to all tokens (CogVideoX-2B)."""

from __future__ import annotations

import torch

from .geometry import TokenGrid, slice_text_image_table
from .mixin import Mixin
from .rope import Rotary
from .sincos import sincos_3d_table


class Basic3DPositionEmbeddingMixin(Mixin):
    """`pos_embedding` (1, text_length + T*H*W, hidden): zero text rows, then the sin-cos grid.

    A persistent buffer: released checkpoints carry it (official: a frozen Parameter), and loading
    one restores exactly the table the weights were trained with.
    """

    legacy_position_table = False

    def __init__(
        self,
        height: int,
        width: int,
        compressed_num_frames: int,
        hidden_size: int,
        text_length: int = 0,
        height_interpolation: float = 1.0,
        width_interpolation: float = 1.0,
        time_interpolation: float = 1.0,
    ):
        super().__init__()
        self.text_length = text_length
        self.grid_size = (compressed_num_frames, height, width)
        self.interpolation = (time_interpolation, height_interpolation, width_interpolation)
        self.hidden_size = hidden_size
        self.register_buffer("pos_embedding", self._table())

    def _table(self) -> torch.Tensor:
        t, h, w = self.grid_size
        ti, hi, wi = self.interpolation
        grid = sincos_3d_table(self.hidden_size, t, h, w, hi, wi, ti)
        text = torch.zeros(self.text_length, self.hidden_size, device="cpu")
        return torch.cat((text, grid))[None].to(torch.get_default_device())

    def reset_buffers(self) -> None:
        """Recompute the table (after building on the meta device)."""
        self.pos_embedding = self._table().to(self.pos_embedding.device, self.pos_embedding.dtype)

    def position_table(self, grid: TokenGrid) -> torch.Tensor:
        """(1, L + N, hidden) rows for this call's tokens (image rows sliced in 3D)."""
        return slice_text_image_table(self.pos_embedding, self.text_length, self.grid_size, grid, "position table")

    def rotary(self, grid: TokenGrid) -> Rotary | None:
        return None
