"""Context parallelism: 2 gloo processes on CPU give what one process gives.

Each spawned rank builds the same seeded tiny VAE (cp_size 2), encodes/decodes the same clip
with the time axis split over the two ranks, and rank 0 saves the gathered results; the test
process computes the single-process references and compares.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from _vae_testkit import free_port, init_gloo, rel_err, tiny_vae

from cogvideox_sat import distributed
from cogvideox_sat.vae.chunking import decode_chunked

WORLD = 2
SEED = 3
FRAMES = 17  # 1 + 4*4: latent frames 5 = 1 + (2, 2) groups, the shortest clip 2 ranks accept


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return {
        "x": torch.rand(1, 3, FRAMES, 16, 24, generator=gen) * 2 - 1,
        "z": torch.randn(1, 4, 5, 2, 3, generator=gen),
        "w": torch.randn(1, 8, 5, 2, 3, generator=gen),  # weights of a scalar loss on the moments
    }


def _worker(rank: int, port: int, inputs_path: str, out_path: str) -> None:
    torch.set_num_threads(1)
    init_gloo(rank, WORLD, port)
    try:
        group = distributed.initialize_context_parallel(WORLD)
        data = torch.load(inputs_path)
        out = {}
        vae = tiny_vae(SEED, cp_size=WORLD, gather_norm_encoder=True, gather_norm_decoder=True)
        vae.set_context_parallel_group(group)
        with torch.no_grad():
            out["moments"] = vae.encode(data["x"], unregularized=True)[0]
            out["latent"] = vae.encode(data["x"])
            out["decode"] = vae.decode(data["z"])
            out["decode_pieces"] = vae.decode(data["z"], output_cp=True)
            # Encode -> decode without gathering the latents in between.
            out["roundtrip"] = vae.decode(vae.encode(data["x"], output_cp=True), input_cp=True)
        # Gradients cross the halo exchange, the norm statistics and the split/gather.
        x = data["x"].clone().requires_grad_(True)
        (vae.encode(x, unregularized=True)[0] * data["w"]).sum().backward()
        out["grad_x"] = x.grad
        # Decoder with per-rank norm statistics (official gather_norm False).
        local = tiny_vae(SEED, cp_size=WORLD, gather_norm_encoder=True, gather_norm_decoder=False)
        local.set_context_parallel_group(group)
        with torch.no_grad():
            out["decode_local_norm"] = local.decode(data["z"])
        torch.save(out, f"{out_path}.{rank}")
    finally:
        distributed.destroy_context_parallel()
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def cp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("vae_cp")
    torch.save(_inputs(), tmp / "inputs.pt")
    mp.spawn(_worker, args=(free_port(), str(tmp / "inputs.pt"), str(tmp / "out")), nprocs=WORLD, join=True)
    return {"rank0": torch.load(tmp / "out.0"), "rank1": torch.load(tmp / "out.1")}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    data = _inputs()
    vae = tiny_vae(SEED, cp_size=1, gather_norm_encoder=True, gather_norm_decoder=True)
    local = tiny_vae(SEED, cp_size=1, gather_norm_encoder=True, gather_norm_decoder=False)
    ref = {}
    with torch.no_grad():
        ref["moments"] = vae.encode(data["x"], unregularized=True)[0]
        ref["latent"] = vae.encode(data["x"])
        # CP decode keeps frame 0 separate (official use_cp=True path): 1 + 4 * 4 frames.
        ref["decode"] = vae.decoder(data["z"], use_cp=True)
        ref["roundtrip"] = vae.decoder(ref["latent"], use_cp=True)
        # Per-rank statistics = per-chunk statistics of a streamed decode cut where the ranks are.
        ref["decode_local_norm"] = decode_chunked(local, data["z"], [3, 2], first_frame_separate=True)
    x = data["x"].clone().requires_grad_(True)
    (vae.encode(x, unregularized=True)[0] * data["w"]).sum().backward()
    ref["grad_x"] = x.grad
    return ref


@pytest.mark.parametrize("name", ["moments", "latent", "decode", "grad_x", "decode_local_norm", "roundtrip"])
def test_two_ranks_match_one_process(cp_results, reference, name):
    for rank in ("rank0", "rank1"):
        got = cp_results[rank][name]
        assert got.shape == reference[name].shape
        assert rel_err(got, reference[name]) < 1e-5, (rank, name, rel_err(got, reference[name]))


def test_output_cp_keeps_each_ranks_frames(cp_results, reference):
    # rank 0: frame 0 + 4 * 2 frames, rank 1: 4 * 2 frames
    first, second = cp_results["rank0"]["decode_pieces"], cp_results["rank1"]["decode_pieces"]
    assert (first.shape[2], second.shape[2]) == (9, 8)
    assert rel_err(torch.cat([first, second], dim=2), reference["decode"]) < 1e-5


def test_cp_rejects_a_clip_too_short_for_the_ranks():
    vae = tiny_vae(SEED, cp_size=1)
    vae.cp_size = 4  # no group of 4 exists in this process
    with pytest.raises(ValueError, match="context-parallel group"):
        vae.encode(torch.zeros(1, 3, 9, 16, 16))
    from cogvideox_sat.vae.time_split import balanced_groups, check_cp_groups

    with pytest.raises(ValueError, match="too short for context parallelism over 2 ranks"):
        check_cp_groups(balanced_groups(2, 2))  # 9 frames: latent groups (1, 1)
    check_cp_groups(balanced_groups(3, 2))  # 13 frames: (1, 2) is fine


def test_cp_size_one_needs_no_process_group():
    assert not torch.distributed.is_initialized()
    vae = tiny_vae(SEED, cp_size=1)
    with torch.no_grad():
        assert vae.encode(torch.zeros(1, 3, 5, 16, 16)).shape == (1, 4, 2, 2, 2)
    assert distributed.get_context_parallel_world_size() == 1
    assert distributed.get_context_parallel_rank() == 0


def test_model_parallel_accessors_delegate_to_sat_mpu(monkeypatch):
    """With SAT's mpu initialised, its model-parallel group doubles as the CP group (official)."""
    import sys
    import types

    group = object()
    fake = types.SimpleNamespace(
        model_parallel_is_initialized=lambda: True,
        get_model_parallel_group=lambda: group,
        get_model_parallel_world_size=lambda: 2,
        get_model_parallel_rank=lambda: 1,
        get_data_parallel_group=lambda: None,
        get_data_parallel_world_size=lambda: 4,
        get_data_parallel_rank=lambda: 3,
    )
    monkeypatch.setitem(sys.modules, "sat.mpu", fake)
    try:
        assert distributed.get_model_parallel_world_size() == 2 and distributed.get_model_parallel_rank() == 1
        assert distributed.get_data_parallel_world_size() == 4 and distributed.get_data_parallel_rank() == 3
        monkeypatch.setattr(distributed.dist, "get_process_group_ranks", lambda g: [0, 1])
        assert distributed.use_model_parallel_group_for_cp() is group
        assert distributed.get_context_parallel_group() is group
        assert distributed.get_context_parallel_world_size() == 2
    finally:
        distributed.destroy_context_parallel()
    fake.model_parallel_is_initialized = lambda: False
    assert distributed.get_model_parallel_world_size() == 1 and distributed.get_model_parallel_group() is None
