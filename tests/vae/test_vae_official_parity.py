"""The VAE against the official code: configs, state-dict keys, checkpoint loading, numbers.

Numbers come from ../shared/fixtures/official/vae_9f (official code, fp32, CPU, one thread);
every output is compared at max |ours - official| / max |official| <= 1e-5.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from _vae_testkit import FIXTURE, rel_err, tiny_config
from omegaconf import OmegaConf
from safetensors.torch import load_file

from cogvideox_sat.registry import instantiate_from_config
from cogvideox_sat.vae import (
    ContextParallelDecoder3D,
    ContextParallelEncoder3D,
    DiagonalGaussianRegularizer,
    VideoAutoencoderInferenceWrapper,
)
from cogvideox_sat.vae.first_stage import decode_first_stage, encode_first_stage

TOL = 1e-5
SCALE_FACTOR = 1.15258426  # the fixture's engine scale_factor (2B)
SAMPLE_SEED = 20240930


@pytest.fixture(scope="module")
def fixture_dir():
    if not FIXTURE.is_dir():
        pytest.skip(f"official fixtures not found at {FIXTURE}")
    return FIXTURE


@pytest.fixture(scope="module")
def vae(fixture_dir) -> VideoAutoencoderInferenceWrapper:
    model = instantiate_from_config(OmegaConf.load(fixture_dir / "config.yaml"))
    model.load_state_dict(load_file(fixture_dir / "state_dict.safetensors"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def io(fixture_dir) -> tuple[dict, dict]:
    return load_file(fixture_dir / "inputs.safetensors"), load_file(fixture_dir / "outputs.safetensors")


def test_official_config_builds_our_classes(vae):
    assert isinstance(vae, VideoAutoencoderInferenceWrapper)
    assert isinstance(vae.encoder, ContextParallelEncoder3D)
    assert isinstance(vae.decoder, ContextParallelDecoder3D)
    assert isinstance(vae.regularization, DiagonalGaussianRegularizer)
    assert isinstance(vae.loss, torch.nn.Identity)
    assert VideoAutoencoderInferenceWrapper.path_params == ("ckpt_path",)


def test_state_dict_keys_are_the_official_ones(vae, fixture_dir):
    official = load_file(fixture_dir / "state_dict.safetensors")
    ours = vae.state_dict()
    assert sorted(ours) == sorted(official)
    assert all(ours[k].shape == official[k].shape for k in official)
    meta = json.loads((fixture_dir / "meta.json").read_text())
    assert len(ours) == meta["state_dict_num_tensors"] == 244
    assert sum(v.numel() for v in ours.values()) == meta["state_dict_num_elements"]


def test_encode_mode(vae, io):
    inputs, outputs = io
    with torch.no_grad():
        assert rel_err(vae.encode(inputs["x"]), outputs["encode_mode"]) <= TOL
        assert rel_err(vae.encode_distribution(inputs["x"]).mode(), outputs["encode_mode"]) <= TOL


def test_encode_raw_moments(vae, io):
    inputs, outputs = io
    with torch.no_grad():
        moments, log = vae.encode(inputs["x"], unregularized=True)
        assert log == {}
        assert rel_err(moments, outputs["encode_unregularized_moments"]) <= TOL
        assert rel_err(vae.encode_moments(inputs["x"]), outputs["encode_unregularized_moments"]) <= TOL


def test_encode_sample_draws_the_official_noise(vae, io):
    inputs, outputs = io
    vae.regularization.sample = True
    try:
        torch.manual_seed(SAMPLE_SEED)
        with torch.no_grad():
            z, log = vae.encode(inputs["x"], return_reg_log=True)
    finally:
        vae.regularization.sample = False
    assert rel_err(z, outputs["encode_sample"]) <= TOL
    assert set(log) == {"kl_loss"} and log["kl_loss"].dim() == 0
    torch.manual_seed(SAMPLE_SEED)
    assert torch.equal(torch.randn_like(outputs["encode_mode"]), outputs["encode_sample_noise"])
    # The explicit API: the same draw from a generator seeded the same way.
    posterior = vae.encode_distribution(inputs["x"])
    drawn = posterior.sample(torch.Generator().manual_seed(SAMPLE_SEED))
    assert rel_err(drawn, outputs["encode_sample"]) <= TOL


def test_decode_plain_gives_four_frames_per_latent(vae, io):
    _, outputs = io
    with torch.no_grad():
        frames = vae.decode(outputs["encode_mode"])
    assert frames.shape[2] == 4 * outputs["encode_mode"].shape[2] == 12
    assert rel_err(frames, outputs["decode_plain"]) <= TOL


def test_decoder_first_frame_path(vae, io):
    _, outputs = io
    with torch.no_grad():
        frames = vae.decoder(outputs["encode_mode"], use_cp=True)
        chunk, state = vae.decode_chunk(outputs["encode_mode"], first_frame_separate=True, keep_state=False)
    assert frames.shape[2] == 9 and state is None
    assert rel_err(frames, outputs["decoder_direct_use_cp_true"]) <= TOL
    assert rel_err(chunk, outputs["decoder_direct_use_cp_true"]) <= TOL


def test_engine_encode_first_stage(vae, io):
    inputs, outputs = io
    assert rel_err(encode_first_stage(vae, inputs["x"], SCALE_FACTOR), outputs["engine_encode_first_stage"]) <= TOL


def test_engine_decode_first_stage_drops_latent_frame_zero(vae, io):
    _, outputs = io
    frames = decode_first_stage(vae, outputs["engine_encode_first_stage"], SCALE_FACTOR)
    assert frames.shape[2] == 8  # 3 latents, frame 0 dropped, 4 frames per latent
    assert rel_err(frames, outputs["engine_decode_first_stage"]) <= TOL


# ---------------------------------------------------------------- official YAMLs and checkpoints

OFFICIAL_YAMLS = [
    "cogvideox_2b.yaml",
    "cogvideox_2b_lora.yaml",
    "cogvideox_5b.yaml",
    "cogvideox_5b_lora.yaml",
    "cogvideox_5b_i2v.yaml",
    "cogvideox_5b_i2v_lora.yaml",
    "cogvideox1.5_5b.yaml",
    "cogvideox1.5_5b_i2v.yaml",
]
# Computed from the official classes (commit 7a1af71) built with the 2B first_stage_config:
# sha256 of the sorted "key:shape" lines, tensor counts and parameter counts.
OFFICIAL_KEYS_SHA256 = "d1a86ee1119fa026477b90f0b159f1faffc6aaaf1d98c21d39681d42fe6b2a72"
OFFICIAL_ENCODER = (128, 92_215_456)
OFFICIAL_DECODER = (308, 123_368_451)


@pytest.mark.parametrize("name", OFFICIAL_YAMLS)
def test_official_first_stage_config_builds_unchanged(fixture_dir, name):
    cfg = OmegaConf.load(fixture_dir.parent / "configs" / name).model.first_stage_config
    assert cfg.params.ckpt_path.endswith("vae/3d-vae.pt")
    cfg.params.ckpt_path = None  # the released weights are not here; everything else as shipped
    with torch.device("meta"):
        vae = instantiate_from_config(cfg)
    sd = vae.state_dict()
    lines = sorted(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == OFFICIAL_KEYS_SHA256
    for module, (tensors, params) in ((vae.encoder, OFFICIAL_ENCODER), (vae.decoder, OFFICIAL_DECODER)):
        assert (len(module.state_dict()), sum(p.numel() for p in module.parameters())) == (tensors, params)


def _tiny_state(fixture_dir) -> dict[str, torch.Tensor]:
    return load_file(fixture_dir / "state_dict.safetensors")


def test_ckpt_path_loads_strictly_and_reports(fixture_dir, tmp_path, io):
    state = _tiny_state(fixture_dir)
    checkpoint = {"state_dict": {**state, "loss.discriminator.weight": torch.zeros(2)}}
    torch.save(checkpoint, tmp_path / "3d-vae.pt")
    cfg = tiny_config()
    cfg["params"]["ckpt_path"] = str(tmp_path / "3d-vae.pt")
    vae = instantiate_from_config(cfg).eval()
    report = vae.load_report
    assert report.ok and report.loaded == 244 and report.ignored == {"loss": 1}
    inputs, outputs = io
    with torch.no_grad():
        assert rel_err(vae.encode(inputs["x"]), outputs["encode_mode"]) <= TOL


def test_ckpt_path_mismatch_names_the_keys(fixture_dir, tmp_path):
    state = _tiny_state(fixture_dir)
    del state["decoder.conv_out.conv.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    cfg = tiny_config()
    cfg["params"]["ckpt_path"] = str(tmp_path / "bad.pt")
    expected = r"missing in checkpoint \(1\):\s+decoder.conv_out.conv.bias[\s\S]*unexpected in checkpoint \(1\):\s+decoder.extra.weight"
    with pytest.raises(RuntimeError, match=expected):
        instantiate_from_config(cfg)


def test_ckpt_with_pickled_objects_is_refused(tmp_path):
    torch.save({"state_dict": {}, "callbacks": {"cb": object()}}, tmp_path / "lightning.pt")
    cfg = tiny_config()
    cfg["params"]["ckpt_path"] = str(tmp_path / "lightning.pt")
    with pytest.raises(ValueError, match="not loaded"):
        instantiate_from_config(cfg)


def test_bfloat16_runs_on_cpu_and_stays_close(vae, io):
    """CPU runs (DeepSpeed on CPU: bf16 or fp32) encode/decode in bf16: ~1.2% relative L2 here."""
    inputs, outputs = io
    model = instantiate_from_config(tiny_config()).eval()
    model.load_state_dict(vae.state_dict())
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        moments = model.encode_moments(inputs["x"].bfloat16()).float()
        frames = model.decoder(outputs["encode_mode"].bfloat16(), use_cp=True).float()
    for got, name in ((moments, "encode_unregularized_moments"), (frames, "decoder_direct_use_cp_true")):
        want = outputs[name]
        assert ((got - want).norm() / want.norm()).item() < 3e-2, name
