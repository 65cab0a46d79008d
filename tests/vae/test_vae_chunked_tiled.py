"""Memory-bounded paths: streamed time chunks and spatial tiles against one full pass.

Streaming is exact except for one documented difference: GroupNorm statistics cover the
chunk, not the clip (as in the official chunked decode). So the exact tests compare against a
full pass whose group norms use the same time segments; separate tests bound the size of
that approximation (and of tiling's) against the plain full decode.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _vae_testkit import rel_err, tiny_vae

from cogvideox_sat.vae.chunking import decode_chunked, encode_chunked, even_chunk_sizes, official_chunk_sizes
from cogvideox_sat.vae.first_stage import decode_first_stage, encode_first_stage
from cogvideox_sat.vae.normalization import GroupNorm3D
from cogvideox_sat.vae.tiling import TileSpec, decode_tiled, tile_starts
from cogvideox_sat.vae.time_split import check_frame_count

TOL = 1e-5


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=5)


def segmented_norms(monkeypatch: pytest.MonkeyPatch, groups: list[int]) -> None:
    """Make every GroupNorm3D normalise each chunk's time segment on its own.

    groups: latent frames after frame 0 per chunk. At a level with T frames, each latent frame
    spans u = (T - 1) / sum(groups) frames, frame 0 rides with chunk 0.
    """

    def forward(self, x, time):
        u = (x.shape[2] - 1) // sum(groups)
        sizes = [u * g + (1 if i == 0 else 0) for i, g in enumerate(groups)]
        parts = [F.group_norm(seg, self.num_groups, self.weight, self.bias, self.eps) for seg in x.split(sizes, 2)]
        return torch.cat(parts, dim=2)

    monkeypatch.setattr(GroupNorm3D, "forward", forward)


def test_streamed_decode_equals_full_pass_with_per_chunk_statistics(vae, monkeypatch):
    z = _randn(1, 4, 8, 3, 4)
    chunked = decode_chunked(vae, z, [3, 3, 2], first_frame_separate=True)
    segmented_norms(monkeypatch, [2, 3, 2])
    with torch.no_grad():
        full = vae.decoder(z, use_cp=True)
    assert chunked.shape[2] == 1 + 4 * 7
    assert rel_err(chunked, full) <= TOL


def test_streamed_encode_equals_full_pass_with_per_chunk_statistics(vae, monkeypatch):
    x = _randn(1, 3, 21, 16, 16, seed=1).clamp(-1, 1)
    chunked = encode_chunked(vae, x, frames_per_chunk=8)  # chunks of 9, 8, 4 frames
    segmented_norms(monkeypatch, [2, 2, 1])
    with torch.no_grad():
        full = vae.encode_moments(x)
    assert chunked.shape[2] == 6
    assert rel_err(chunked, full) <= TOL


def test_official_decode_first_stage_equals_the_official_call_sequence(vae):
    """decode_first_stage = the official loop over vae.decode(..., clear_fake_cp_cache=...)."""
    z = _randn(2, 4, 8, 3, 4, seed=2)
    ours = decode_first_stage(vae, z * 0.7, 0.7, samples_per_call=1)
    latents = z[:, :, 1:]
    assert official_chunk_sizes(7) == [3, 2, 2]
    with torch.no_grad():
        calls = [
            vae.decode(latents[:, :, 0:3], clear_fake_cp_cache=False, use_cp=True),
            vae.decode(latents[:, :, 3:5], clear_fake_cp_cache=False, use_cp=False),
            vae.decode(latents[:, :, 5:7], clear_fake_cp_cache=True, use_cp=False),
        ]
    assert vae._official_stream is None  # the last call cleared the carried tails
    assert ours.shape[2] == 4 * 7
    assert rel_err(ours, torch.cat(calls, dim=2)) <= TOL


def test_chunked_decode_stays_close_to_the_full_decode(vae):
    # Bounds the per-chunk-statistics approximation on this random-weight model (measured
    # 4-8% relative L2 at these sizes). A carried-state bug (e.g. replicated instead of
    # continued padding) or a misplaced frame gives errors of order 1.
    z = _randn(1, 4, 9, 8, 8, seed=3)
    with torch.no_grad():
        full = vae.decoder(z, use_cp=True)
    for sizes in ([5, 4], [7, 2]):
        chunked = decode_chunked(vae, z, sizes)
        assert ((chunked - full).norm() / full.norm()).item() < 0.12, sizes


def test_chunk_errors_are_clear(vae):
    z = _randn(1, 4, 5, 2, 2)
    with pytest.raises(ValueError, match="do not add up"):
        decode_chunked(vae, z, [2, 2])
    with pytest.raises(ValueError, match=">= 2 latent frames"):
        decode_chunked(vae, z, [4, 1])
    with pytest.raises(ValueError, match="multiple of 4"):
        encode_chunked(vae, _randn(1, 3, 9, 16, 16), frames_per_chunk=6)
    assert even_chunk_sizes(49, 8, first_extra=1) == [9, 8, 8, 8, 8, 8]
    assert official_chunk_sizes(12) == [2] * 6 and official_chunk_sizes(21) == [3] + [2] * 9
    assert official_chunk_sizes(1) == [1]


@pytest.mark.parametrize("frames", [0, 2, 8, 10, 48, 50])
def test_frame_counts_that_are_not_4k_plus_1_are_rejected(vae, frames):
    x = torch.zeros(1, 3, frames, 16, 16)
    with pytest.raises(ValueError, match=r"1 \+ 4\*k frames"):
        vae.encode(x)
    with pytest.raises(ValueError, match=r"1 \+ 4\*k frames"):
        encode_first_stage(vae, x, 1.0, frames_per_chunk=4)


def test_frame_count_rule():
    assert [check_frame_count(n) for n in (1, 5, 49, 81)] == [0, 1, 12, 20]
    with pytest.raises(ValueError, match="trim the clip to 49 or pad it to 53"):
        check_frame_count(50)


def test_chunked_encode_first_stage_matches_its_own_moments(vae):
    x = _randn(1, 3, 13, 16, 16, seed=4).clamp(-1, 1)
    latents = encode_first_stage(vae, x, 0.5, frames_per_chunk=4)
    moments = encode_chunked(vae, x, frames_per_chunk=4)
    assert rel_err(latents, 0.5 * moments[:, :4]) <= TOL  # mode = mean (sample: False)


# ---------------------------------------------------------------- tiling


def test_tile_starts_cover_the_axis():
    assert tile_starts(10, 12, 4) == [0]
    assert tile_starts(20, 8, 2) == [0, 6, 12]
    assert tile_starts(21, 8, 2) == [0, 6, 12, 13]
    with pytest.raises(ValueError):
        TileSpec(8, 8, 8, 2)


def test_tile_blending_is_exact_for_a_local_decoder():
    """With a decoder that is local (nearest 8x upsampling), blended tiles rebuild the full output."""

    def upsample(z: torch.Tensor) -> torch.Tensor:
        return z.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)[:, :3]

    z = _randn(1, 4, 2, 13, 21)
    tiled = decode_tiled(upsample, z, TileSpec(5, 8, 2, 3))
    assert rel_err(tiled, upsample(z)) <= 1e-6


def test_one_tile_equals_the_full_decode(vae):
    z = _randn(1, 4, 3, 4, 6, seed=6)
    with torch.no_grad():
        full = vae.decoder(z, use_cp=True)
        tiled = decode_tiled(lambda q: vae.decoder(q, use_cp=True), z, TileSpec(4, 6, 1, 1))
    assert rel_err(tiled, full) <= TOL


def test_tiled_decode_stays_close_to_the_full_decode(vae):
    # Tiles see zero padding at their borders and their own GroupNorm statistics; the overlap
    # blending keeps this random-weight model within ~5% relative L2 (measured 4.7%).
    z = _randn(1, 4, 3, 16, 16, seed=7)
    with torch.no_grad():
        full = vae.decoder(z, use_cp=True)
        tiled = decode_tiled(lambda q: vae.decoder(q, use_cp=True), z, TileSpec(12, 12, 8, 8))
    assert tiled.shape == full.shape
    assert ((tiled - full).norm() / full.norm()).item() < 0.08


def test_decode_first_stage_with_tiles_and_chunks(vae):
    z = _randn(1, 4, 5, 4, 6, seed=8)
    plain = decode_first_stage(vae, z, 1.0, drop_first_latent=False, first_frame_separate=True, chunk_sizes=[5])
    with torch.no_grad():
        assert rel_err(plain, vae.decoder(z, use_cp=True)) <= TOL
    tiled = decode_first_stage(
        vae, z, 1.0, drop_first_latent=False, first_frame_separate=True, chunk_sizes=[3, 2], tile=TileSpec(4, 6, 1, 1)
    )
    assert rel_err(tiled, decode_chunked(vae, z, [3, 2])) <= TOL
