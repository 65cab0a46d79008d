"""The engine's encode_first_stage / decode_first_stage against the official engine's outputs
(../shared/fixtures/official/vae_9f: engine_encode_first_stage, engine_decode_first_stage)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
from cogvideox_sat.engine import SATVideoDiffusionEngine

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine(official_fixtures, tmp_path_factory):
    from safetensors.torch import load_file

    demo = REPO / "configs" / "demo" / "tiny_t2v.yaml"
    if not demo.is_file():
        pytest.skip(f"{demo} not found")
    case = official_fixtures / "vae_9f"
    cfg = OmegaConf.load(demo).model
    cfg.conditioner_config.params.emb_models[0].params.model_dir = str(make_tiny_t5(tmp_path_factory.mktemp("t5")))
    cfg.first_stage_config = OmegaConf.load(case / "config.yaml")  # official target names
    cfg.scale_factor = 1.15258426
    cfg.disable_first_stage_autocast = True
    eng = SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=False, bf16=False, device="cpu"))
    missing, unexpected = eng.first_stage_model.load_state_dict(load_file(str(case / "state_dict.safetensors")), strict=False)
    assert not unexpected and not [k for k in missing if not k.startswith("loss")], (missing, unexpected)
    return eng.eval()


@pytest.fixture(scope="module")
def io(official_fixtures):
    from safetensors.torch import load_file

    case = official_fixtures / "vae_9f"
    return load_file(str(case / "inputs.safetensors")), load_file(str(case / "outputs.safetensors"))


def test_encode_first_stage_equals_official(engine, io):
    inputs, outputs = io
    z = engine.encode_first_stage(inputs["x"], None)
    torch.testing.assert_close(z, outputs["engine_encode_first_stage"], rtol=1e-5, atol=1e-5)


def test_decode_first_stage_equals_official(engine, io):
    _, outputs = io
    frames = engine.decode_first_stage(outputs["engine_encode_first_stage"])
    assert frames.shape == outputs["engine_decode_first_stage"].shape == (1, 3, 8, 32, 32)
    torch.testing.assert_close(frames, outputs["engine_decode_first_stage"], rtol=1e-5, atol=1e-5)
