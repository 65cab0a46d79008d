"""`Rotary3DPositionEmbeddingMixin`: 3D RoPE on image tokens (5B, 1.5), plus the learnable
absolute table of CogVideoX-5B-I2V (`learnable_pos_embed`)."""

from __future__ import annotations

import torch
from torch import nn

from .geometry import TokenGrid, slice_image_table, slice_text_image_table
from .mixin import Mixin
from .rope import Rotary, rope_3d_angles


class Rotary3DPositionEmbeddingMixin(Mixin):
    """RoPE tables `freqs_cos` / `freqs_sin` (T, H, W, head_dim) are non-persistent buffers: the
    official checkpoints do not hold them and they follow `.to()`. With `learnable_pos_embed`,
    `pos_embedding` (1, text_length + T*H*W, hidden) is a trainable parameter added to all
    tokens before the first layer. Interpolation arguments are accepted and ignored, as
    officially.
    """

    legacy_position_table = True  # RoPE checkpoints keep SAT's unused transformer.position_embeddings

    def __init__(
        self,
        height: int,
        width: int,
        compressed_num_frames: int,
        hidden_size: int,
        hidden_size_head: int,
        text_length: int,
        theta: float = 10000,
        rot_v: bool = False,
        height_interpolation: float = 1.0,
        width_interpolation: float = 1.0,
        time_interpolation: float = 1.0,
        learnable_pos_embed: bool = False,
    ):
        super().__init__()
        self.text_length = text_length
        self.grid_size = (compressed_num_frames, height, width)
        self.head_dim = hidden_size_head
        self.theta = theta
        self.rot_v = rot_v
        cos, sin = self._tables()
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)
        if learnable_pos_embed:
            num_rows = text_length + compressed_num_frames * height * width
            self.pos_embedding = nn.Parameter(torch.zeros(1, num_rows, hidden_size))
        else:
            self.pos_embedding = None

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        angles = rope_3d_angles(self.head_dim, *self.grid_size, theta=self.theta)
        device = torch.get_default_device()
        return angles.cos().to(device), angles.sin().to(device)

    def reset_buffers(self) -> None:
        """Recompute the RoPE tables (after building on the meta device)."""
        cos, sin = self._tables()
        self.freqs_cos = cos.to(self.freqs_cos.device, self.freqs_cos.dtype)
        self.freqs_sin = sin.to(self.freqs_sin.device, self.freqs_sin.dtype)

    def position_table(self, grid: TokenGrid) -> torch.Tensor | None:
        """(1, L + N, hidden) learnable rows for this call (image rows sliced in 3D), or None."""
        if self.pos_embedding is None:
            return None
        return slice_text_image_table(self.pos_embedding, self.text_length, self.grid_size, grid, "learnable position table")

    def rotary(self, grid: TokenGrid) -> Rotary:
        """Per-token rotation for this call's [text; image] sequence."""
        rows = [slice_image_table(t.flatten(0, 2), self.grid_size, grid) for t in (self.freqs_cos, self.freqs_sin)]
        cos = torch.cat((rows[0].new_ones(grid.text_length, self.head_dim), rows[0]))
        sin = torch.cat((rows[1].new_zeros(grid.text_length, self.head_dim), rows[1]))
        return Rotary(cos[None, :, None, :], sin[None, :, None, :], rotate_value=self.rot_v)
