"""Token geometry of a latent video: patch sizes, the token grid, patchify and unpatchify.

The official code spreads this over einops patterns in three mixins; keeping it in one place
makes the token order (text first, then image patches in (t, h, w) raster order, patch features
ordered (c, pt, ph, pw)) a single fact that the patch embedding, the position tables and the
output head share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

PatchSize = tuple[int, int, int]


def to_patch_size(patch_size: Any) -> PatchSize:
    """`(pt, ph, pw)` from an official `patch_size`: an int `p` (1.0 YAMLs: spatial only) or a list.

    The 2B/5B YAMLs say `patch_size: 2`, which the current official code cannot build; it means
    one latent frame per token and 2x2 latent pixels, i.e. `(1, 2, 2)`.
    """
    if isinstance(patch_size, bool):
        raise ValueError(f"patch_size must be an int or [t, h, w], got {patch_size!r}")
    if isinstance(patch_size, int):
        sizes = (1, patch_size, patch_size)
    elif isinstance(patch_size, Sequence) or hasattr(patch_size, "__iter__"):
        sizes = tuple(int(p) for p in patch_size)
        if len(sizes) != 3:
            raise ValueError(f"patch_size list must be [t, h, w] (3 ints), got {list(sizes)}")
    else:
        raise ValueError(f"patch_size must be an int or [t, h, w], got {patch_size!r}")
    if any(p < 1 for p in sizes):
        raise ValueError(f"patch_size entries must be >= 1, got {list(sizes)}")
    return sizes  # type: ignore[return-value]


@dataclass(frozen=True)
class TokenGrid:
    """Where the tokens of one forward call sit: `text_length` text tokens, then a
    `frames x height x width` grid of image patches (the official rope_T, rope_H, rope_W)."""

    text_length: int
    frames: int
    height: int
    width: int

    @property
    def image_tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def total_tokens(self) -> int:
        return self.text_length + self.image_tokens


def token_grid(latent_shape: Sequence[int], patch: PatchSize, text_length: int) -> TokenGrid:
    """Token grid of latents shaped (B, T, C, H, W); raises with the fix when they do not tile."""
    _, t, _, h, w = latent_shape
    pt, ph, pw = patch
    if t % pt:
        raise ValueError(
            f"{t} latent frames do not divide by the temporal patch size {pt}: pad the latents to "
            f"{(t + pt - 1) // pt * pt} frames (for 1.5 models the latent frame count must be even)"
        )
    if h % ph or w % pw:
        raise ValueError(f"latent size {h}x{w} is not a multiple of the patch size {ph}x{pw}")
    return TokenGrid(text_length=text_length, frames=t // pt, height=h // ph, width=w // pw)


def patchify(latents: torch.Tensor, patch: PatchSize) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T/pt * H/ph * W/pw, C*pt*ph*pw), features ordered (c, pt, ph, pw)."""
    b, t, c, h, w = latents.shape
    pt, ph, pw = patch
    x = latents.reshape(b, t // pt, pt, c, h // ph, ph, w // pw, pw)
    # (b, T, pt, c, H, ph, W, pw) -> (b, T, H, W, c, pt, ph, pw)
    x = x.permute(0, 1, 4, 6, 3, 2, 5, 7)
    return x.reshape(b, (t // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify(tokens: torch.Tensor, grid: TokenGrid, patch: PatchSize, channels: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, T*H*W, C*pt*ph*pw) -> (B, T*pt, C, H*ph, W*pw)."""
    b = tokens.shape[0]
    pt, ph, pw = patch
    x = tokens.reshape(b, grid.frames, grid.height, grid.width, channels, pt, ph, pw)
    # (b, T, H, W, c, pt, ph, pw) -> (b, T, pt, c, H, ph, W, pw)
    x = x.permute(0, 1, 5, 4, 2, 6, 3, 7)
    return x.reshape(b, grid.frames * pt, channels, grid.height * ph, grid.width * pw)


def slice_image_table(table: torch.Tensor, table_grid: tuple[int, int, int], grid: TokenGrid) -> torch.Tensor:
    """Rows of a flattened (t, h, w) table for a grid no larger than `table_grid`.

    The official code slices the flat table `[:n_tokens]`, which is right only when height and
    width are the configured maximum; slicing the 3D grid gives every token its own (t, h, w)
    row for any smaller size and is identical at the maximum.
    """
    t0, h0, w0 = table_grid
    if grid.frames > t0 or grid.height > h0 or grid.width > w0:
        raise ValueError(
            f"token grid {grid.frames}x{grid.height}x{grid.width} (t x h x w) exceeds the position "
            f"table {t0}x{h0}x{w0}; raise num_frames / latent_height / latent_width in the network config"
        )
    if grid.height == h0 and grid.width == w0:
        return table[: grid.image_tokens]
    cube = table.reshape(t0, h0, w0, *table.shape[1:])
    return cube[: grid.frames, : grid.height, : grid.width].reshape(grid.image_tokens, *table.shape[1:])


def slice_text_image_table(table: torch.Tensor, text_length: int, table_grid: tuple[int, int, int], grid: TokenGrid, name: str) -> torch.Tensor:
    """(1, L + N, hidden) rows of a (1, L + N_max, hidden) [text; image] table for this call's tokens.

    The text rows are fixed to the configured text length (the T5 max_length); the image rows are
    sliced in 3D (`slice_image_table`). `name` says which table, for the error message.
    """
    if grid.text_length != text_length:
        raise ValueError(
            f"context has {grid.text_length} tokens but the {name} was built for text_length "
            f"{text_length} (pos_embed_config.params.text_length, = the T5 max_length)"
        )
    rows = table[0]
    image = slice_image_table(rows[text_length:], table_grid, grid)
    return torch.cat((rows[:text_length], image))[None]
