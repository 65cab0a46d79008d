"""tools/build_latent_cache.py on the tiny demo configs: real (tiny) VAE and T5, resume, read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cogvideox_sat.config import load_configs
from cogvideox_sat.data import LatentCache, SFTDataset, check_cache_matches_model
from cogvideox_sat.data.hashing import HashMemo
from cogvideox_sat.demo.clips import make_sft_folder
from tests._scripts import load_script

REPO = Path(__file__).resolve().parents[2]
# The demo VAE encodes its posterior mean (`sample: false`); this overlay restores the official
# regularizer, which samples, so the cache stores the posterior moments (the official path).
SAMPLING_VAE = REPO / "tests/data/sampling_vae.yaml"
CONFIGS = [str(REPO / "configs/demo/tiny_t2v.yaml"), str(REPO / "configs/demo/sft_tiny.yaml"), str(SAMPLING_VAE)]
PARAMS = {"video_size": [64, 96], "fps": 8, "max_num_frames": 9, "skip_frms_num": 0.0}


def load_tool(monkeypatch: pytest.MonkeyPatch):
    """tools/build_latent_cache.py, registered in sys.modules until the test ends."""
    return load_script(REPO / "tools" / "build_latent_cache.py", "build_latent_cache", monkeypatch)


@pytest.fixture
def demo_assets(tmp_path, monkeypatch):
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    monkeypatch.chdir(tmp_path)  # the demo configs name demo_assets/... relative paths
    make_tiny_t5(tmp_path / "demo_assets" / "t5", d_model=32)
    make_sft_folder(tmp_path / "demo_assets" / "data", n_clips=3, num_frames=9, height=64, width=96, fps=8)
    return tmp_path


def test_tool_builds_resumes_and_matches_the_models(demo_assets, capsys, monkeypatch):
    tool = load_tool(monkeypatch)
    argv = ["--base", *CONFIGS, "--cache-dir", "cache", "--device", "cpu", "--num-workers", "0", "--no-progress"]
    assert tool.main(argv) == 0
    assert "3 written" in capsys.readouterr().out
    entries = sorted((demo_assets / "cache" / "entries").rglob("*.safetensors"))
    assert len(entries) == 3
    # rerun: everything is there already
    assert tool.main(argv) == 0
    assert "3 already cached, 0 written" in capsys.readouterr().out

    # the stored tensors are what the config's VAE and T5 give for the training pixels
    cfg = load_configs(CONFIGS)
    torch.manual_seed(42)  # sft_tiny's args.seed: the tool builds its random VAE from it
    encoders = tool.real_encoders(cfg.section("model"), "cpu", torch.float32, HashMemo())
    assert encoders.latent_kind == "moments"  # the official regularizer samples its posterior
    cache = LatentCache(demo_assets / "cache")
    assert cache.fingerprint == encoders.fingerprint
    pixels = SFTDataset("demo_assets/data", **PARAMS)
    item = pixels[0]
    stored = load_file(str(cache.entry_path(pixels.sample_key(0, cache.hashes))))
    assert torch.allclose(stored["latent"], encoders.encode_video(item["mp4"][None])[0], atol=1e-5)
    assert torch.allclose(stored["txt_emb"], encoders.encode_text([item["txt"]])[0], atol=1e-5)
    assert stored["latent"].shape == (8, 3, 8, 12)  # mean + logvar of 4 channels, 3 latent frames, 64x96 / 8
    assert stored["first_frame"].dtype == torch.uint8 and stored["first_frame"].shape == (3, 1, 64, 96)

    # training reads latents, and can check the cache against its models
    cached = SFTDataset("demo_assets/data", latent_cache="cache", **PARAMS)
    assert cached[0]["mp4"].shape == (4, 3, 8, 12) and cached[0]["txt_emb"].shape == (16, 32)
    torch.manual_seed(42)
    from cogvideox_sat.registry import instantiate_from_config

    vae = instantiate_from_config(cfg.section("model")["first_stage_config"])
    check_cache_matches_model(cached.latent_cache, cfg.section("model"), first_stage=vae)


def test_tool_refuses_an_i2v_cache_without_first_frames(demo_assets, capsys, monkeypatch):
    configs = [str(REPO / "configs/demo/tiny_i2v.yaml"), CONFIGS[1]]
    argv = ["--base", *configs, "--cache-dir", "cache", "--device", "cpu", "--no-first-frame", "--no-progress"]
    assert load_tool(monkeypatch).main(argv) == 2
    assert "noised_image_input" in capsys.readouterr().err
    assert not (demo_assets / "cache").exists()


def test_tool_split_over_processes_deals_out_samples_and_memos(demo_assets, capsys, monkeypatch):
    """torchrun's RANK / WORLD_SIZE: each process encodes its share and keeps its own digest memo;
    a single process then finds everything, and training hashes nothing again."""
    tool = load_tool(monkeypatch)
    argv = ["--base", *CONFIGS, "--cache-dir", "cache", "--device", "cpu", "--num-workers", "0", "--no-progress"]
    for rank, written in ((0, 2), (1, 1)):  # 3 clips: samples 0 and 2, then sample 1
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert tool.main(argv) == 0
        assert f"{written} written" in capsys.readouterr().out
    assert (demo_assets / "cache" / "hashes.rank1.json").is_file()
    assert tool.main([*argv, "--prune"]) == 2  # one part cannot prune the others' entries
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert tool.main(argv) == 0
    assert "3 already cached, 0 written" in capsys.readouterr().out

    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr("cogvideox_sat.data.hashing.file_digest", no_hashing)
    cached = SFTDataset("demo_assets/data", latent_cache="cache", **PARAMS)
    assert len([cached[i] for i in range(len(cached))]) == 3
