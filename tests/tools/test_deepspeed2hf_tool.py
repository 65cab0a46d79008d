"""tools/convert_weight_deepspeed2hf.py on a real ZeRO-2 checkpoint: a 2-step bf16 CPU run of the
tiny demo model through train_video.py. Consolidation must return the fp32 master weights (not
the bf16 module copy), and the SAT and diffusers outputs must hold exactly those."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _tools_testkit import REPO, load_tool
from safetensors.torch import load_file

from cogvideox_sat.config import load_configs
from cogvideox_sat.io import load_sat_checkpoint, read_module_state, split_prefix
from cogvideox_sat.io.sat_checkpoint import DIT_PREFIX
from cogvideox_sat.registry import instantiate_from_config

diffusers = pytest.importorskip("diffusers")
from tests.models.test_dit_diffusers_parity import max_rel_err  # noqa: E402

pytestmark = pytest.mark.slow
TOOL = load_tool("convert_weight_deepspeed2hf")
BASE = [REPO / "configs/demo/tiny_t2v.yaml", REPO / "configs/demo/sft_tiny.yaml"]


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cogvideox_sat.demo.clips import make_sft_folder
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("zero2")
    make_tiny_t5(root / "t5", d_model=32)
    # 32x64 clips: the VAE encode runs in bf16, which most CPUs emulate (slowly)
    make_sft_folder(root / "data", n_clips=4, num_frames=9, height=32, width=64, fps=8)
    t5 = {"is_trainable": False, "input_key": "txt", "ucg_rate": 0.1, "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
          "params": {"model_dir": str(root / "t5"), "max_length": 16}}
    overlay = {
        "model": {"conditioner_config": {"params": {"emb_models": [t5]}}},
        "data": {"params": {"video_size": [32, 64]}},
        "args": {"train_data": [str(root / "data")], "valid_data": None, "eval_interval": None, "save": str(root / "runs"),
                 "train_iters": 2, "save_interval": 2, "log_interval": 1, "num_workers": 0, "bf16": True},
        "deepspeed": {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}},
    }
    (root / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    cmd = [sys.executable, str(REPO / "train_video.py"), "--base", *map(str, BASE), str(root / "overlay.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (run,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
    assert (run / "latest").read_text().strip() == "2"
    assert list((run / "2").glob("*zero_pp_rank_*_optim_states.pt")), "expected ZeRO optimizer partitions"
    return run


def module_state(run: Path) -> dict[str, torch.Tensor]:
    return read_module_state(run / "2" / "mp_rank_00_model_states.pt", weights_only=False)


def tiny_dit() -> torch.nn.Module:
    return instantiate_from_config(load_configs(BASE).section("model")["network_config"]).eval()


def test_sat_output_holds_the_fp32_masters(zero2_run, tmp_path):
    assert TOOL.main([str(zero2_run), str(tmp_path / "sat"), "--to", "sat", "--fp32"]) == 0
    assert (tmp_path / "sat" / "latest").read_text() == "2"
    consolidated = read_module_state(tmp_path / "sat" / "2" / "mp_rank_00_model_states.pt")
    module = module_state(zero2_run)
    assert set(consolidated) == set(module)
    assert {v.dtype for v in consolidated.values()} == {torch.float32}
    trained = [k for k, v in module.items() if v.dtype == torch.bfloat16]
    assert len(trained) > 40
    for key in trained:  # the bf16 training copy is the rounded master ...
        assert torch.equal(consolidated[key].to(torch.bfloat16), module[key])
    # ... and the masters carry the bits bf16 dropped
    assert sum(not torch.equal(consolidated[k], module[k].float()) for k in trained) > len(trained) // 2

    dit = tiny_dit()
    report = load_sat_checkpoint(dit, tmp_path / "sat")  # strict
    assert report.ok and report.loaded == len(dit.state_dict())


def test_diffusers_output_matches_our_model_on_the_consolidated_weights(zero2_run, tmp_path):
    assert TOOL.main([str(zero2_run), str(tmp_path / "hf"), "--to", "diffusers", "--fp32"]) == 0  # config: the run's
    ref, info = diffusers.CogVideoXTransformer3DModel.from_pretrained(str(tmp_path / "hf" / "transformer"), output_loading_info=True)
    assert not any(info.values())
    ref.eval().norm_out.norm.eps = 1e-6
    scheduler = json.loads((tmp_path / "hf" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["snr_shift_scale"] == 3.0  # configs/demo/tiny_t2v.yaml's shift_scale

    from cogvideox_sat.io.zero_checkpoint import consolidate_zero_checkpoint

    dit = tiny_dit()
    state, others = split_prefix(consolidate_zero_checkpoint(zero2_run), DIT_PREFIX)
    assert not others
    dit.load_state_dict(state, strict=True)
    gen = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 3, 4, 8, 12, generator=gen), torch.randn(1, 16, 32, generator=gen)
    timesteps = torch.tensor([500.0])
    with torch.no_grad():
        ours = dit(x=x, timesteps=timesteps, context=context)
        theirs = ref(x, context, timesteps, return_dict=False)[0]
    assert max_rel_err(ours, theirs) <= 1e-6


def test_state_dict_output_official_layout(zero2_run, tmp_path):
    assert TOOL.main([str(zero2_run / "2"), str(tmp_path / "sd"), "--max_shard_size", "200KB"]) == 0  # bf16 default
    index = json.loads((tmp_path / "sd" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(str(tmp_path / "sd" / shard)))
    module = module_state(zero2_run)
    assert set(tensors) == set(module)
    assert all(torch.equal(tensors[k], module[k].to(torch.bfloat16)) for k in module)


def test_not_a_zero_checkpoint(tmp_path, capsys):
    from cogvideox_sat.io.sat_writer import write_sat_checkpoint

    write_sat_checkpoint({"model.diffusion_model.x": torch.zeros(1)}, tmp_path / "plain")
    assert TOOL.main([str(tmp_path / "plain"), str(tmp_path / "out")]) == 2
    assert "no ZeRO optimizer partitions" in capsys.readouterr().err
