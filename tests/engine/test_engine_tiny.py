"""SATVideoDiffusionEngine on the tiny CPU demo configs (random DiT and VAE, tiny T5):
training step gradients, I2V conditioning, latent padding, sampling, checkpoint contents."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
from cogvideox_sat.engine import ENGINE_KEYS, SATVideoDiffusionEngine

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo"
OFFICIAL_CONFIGS = REPO.parent / "shared" / "fixtures" / "official" / "configs"
FRAMES, HEIGHT, WIDTH = 9, 64, 96  # -> latents [3, 4, 8, 12]
LATENT = (3, 4, 8, 12)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32)


def model_config(name: str, t5_dir: Path, **overrides):
    path = DEMO / f"{name}.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    cfg = OmegaConf.load(path).model
    cfg.conditioner_config.params.emb_models[0].params.model_dir = str(t5_dir)
    cfg.sampler_config.params.num_steps = 3
    cfg.sampler_config.params.verbose = False
    cfg.sampler_config.params.guider_config.params.num_steps = 3
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def build(cfg) -> SATVideoDiffusionEngine:
    torch.manual_seed(0)
    return SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=False, bf16=False, device="cpu"))


def lora(cfg):
    cfg.not_trainable_prefixes = ["all"]
    cfg.network_config.params.modules.lora_config = {
        "target": "sat.model.finetune.lora2.LoraMixin",
        "params": {"r": 4, "lora_alpha": 4},
    }
    return cfg


def clip_batch(b: int = 2) -> dict:
    return {
        "mp4": torch.rand(b, FRAMES, 3, HEIGHT, WIDTH) * 2 - 1,
        "txt": ["A red square moving right.", "A blue bar moving up."][:b],
        "fps": torch.full((b,), 8),
        "num_frames": torch.full((b,), FRAMES),
    }


CASES = {
    "t2v_full": lambda d: model_config("tiny_t2v", d),
    "t2v_lora": lambda d: model_config("tiny_t2v_lora", d),
    "i2v_full": lambda d: model_config("tiny_i2v", d),
    "i2v_lora": lambda d: lora(model_config("tiny_i2v", d)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_step_grads_exactly_on_trainable_params(case, t5_dir, capsys):
    engine = build(CASES[case](t5_dir))
    total = engine.disable_untrainable_params()
    assert f"Total trainable parameters: {total}" in capsys.readouterr().out
    trainable = {n for n, p in engine.named_parameters() if p.requires_grad}
    assert total == sum(p.numel() for n, p in engine.named_parameters() if n in trainable) > 0
    # VAE and T5 never train; LoRA runs train only the adapters.
    assert all(n.startswith("model.diffusion_model.") for n in trainable)
    if case.endswith("lora"):
        assert all(("matrix_A" in n or "matrix_B" in n) for n in trainable)
        assert len(trainable) == 2 * 8  # 2 layers x (3 + 1) x (A, B)
    else:
        assert not any("matrix_" in n for n in trainable)

    engine.train()
    assert not engine.first_stage_model.training and not engine.conditioner.embedders[0].training
    batch = clip_batch()
    loss, loss_dict = engine.shared_step(batch)
    assert loss.shape == () and torch.isfinite(loss) and loss_dict["loss"] is loss
    loss.backward()
    with_grad = {n for n, p in engine.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(torch.isfinite(p.grad).all() for n, p in engine.named_parameters() if n in with_grad)
    assert any(p.grad.abs().sum() > 0 for n, p in engine.named_parameters() if n in with_grad)
    if case.startswith("i2v"):
        assert batch["concat_images"].shape == (2, *LATENT)


def test_i2v_condition_is_the_first_frame_latent_then_zeros(t5_dir):
    engine = build(model_config("tiny_i2v", t5_dir, noised_image_dropout=0.0))
    batch = clip_batch()
    engine.shared_step(batch)
    image = batch["concat_images"]
    assert image[:, :1].abs().sum() > 0 and torch.count_nonzero(image[:, 1:]) == 0
    # The image latent is that of the (lightly noised) first frame alone.
    torch.manual_seed(3)
    x = batch["mp4"].permute(0, 2, 1, 3, 4)[:, :, :1]
    want = engine.encode_first_stage(engine.add_noise_to_first_frame(x)).permute(0, 2, 1, 3, 4)
    again = dict(clip_batch(), mp4=batch["mp4"])
    torch.manual_seed(3)
    engine.shared_step(again)
    torch.testing.assert_close(again["concat_images"][:, :1], want)

    dropped = build(model_config("tiny_i2v", t5_dir, noised_image_dropout=1.0))
    batch = clip_batch()
    dropped.shared_step(batch)
    assert torch.count_nonzero(batch["concat_images"]) == 0


def test_ucg_rate_controls_the_text_the_network_sees(t5_dir):
    seen = {}
    for rate in (0.0, 1.0):
        engine = build(model_config("tiny_t2v", t5_dir, **{"conditioner_config.params.emb_models.0.ucg_rate": rate}))
        net = engine.model.diffusion_model
        hook = net.register_forward_hook(lambda m, a, kw, out: seen.__setitem__(rate, kw["context"]), with_kwargs=True)
        engine.shared_step(clip_batch())
        hook.remove()
    assert seen[0.0].abs().sum() > 0
    assert torch.count_nonzero(seen[1.0]) == 0


@pytest.mark.parametrize("name", ["tiny_t2v", "tiny_i2v"])
def test_three_step_sample_shape_and_seed(name, t5_dir):
    engine = build(model_config(name, t5_dir)).eval()
    c, uc = engine.conditioner.get_unconditional_conditioning({"txt": ["a red square"]}, force_uc_zero_embeddings=["txt"])
    if engine.noised_image_input:
        image = torch.cat([torch.randn(1, 1, *LATENT[1:]), torch.zeros(1, LATENT[0] - 1, *LATENT[1:])], dim=1)
        c["concat"] = uc["concat"] = image

    def run(seed):
        torch.manual_seed(seed)
        return engine.sample(c, uc=uc, batch_size=1, shape=LATENT)

    a, b, other = run(0), run(0), run(1)
    assert a.shape == (1, *LATENT) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, other)


def test_log_video_outputs(t5_dir):
    engine = build(model_config("tiny_t2v", t5_dir)).eval()
    log = engine.log_video(clip_batch(1), N=1)
    assert log["inputs"].shape == (1, FRAMES, 3, HEIGHT, WIDTH)
    # Official decode: latent frame 0 dropped, 4 frames per remaining latent frame.
    assert log["samples"].shape == log["reconstructions"].shape == (1, 4 * (LATENT[0] - 1), 3, HEIGHT, WIDTH)
    latents = engine.log_video(clip_batch(1), N=1, only_log_video_latents=True)["latents"]
    assert latents.shape == (1, LATENT[1], LATENT[0], *LATENT[2:])


def test_temporal_patch_two_pads_latents_and_passes_ofs(t5_dir):
    """CogVideoX 1.5 style (temporal patch 2, ofs embedding): 3 latent frames padded to 4."""
    cfg = model_config(
        "tiny_i2v",
        t5_dir,
        pad_latent_frames=True,
        **{"network_config.params.patch_size": [2, 2, 2], "network_config.params.ofs_embed_dim": 32},
    )
    engine = build(cfg)
    seen = []
    hook = engine.model.diffusion_model.register_forward_hook(
        lambda m, a, kw, out: seen.append((a[0].shape, kw.get("ofs"))), with_kwargs=True
    )
    batch = clip_batch()
    loss, _ = engine.shared_step(batch)
    assert torch.isfinite(loss)
    (shape, ofs), = seen
    assert shape[1] == 4 and torch.equal(ofs, torch.full((2,), 2.0))
    assert batch["concat_images"].shape[1] == 4 and torch.count_nonzero(batch["concat_images"][:, 1:]) == 0
    # The padded frame is a copy of the first latent frame.
    z = torch.randn(1, *LATENT)
    padded = engine.pad_latents(z)
    assert padded.shape[1] == 4 and torch.equal(padded[:, 0], z[:, 0]) and torch.equal(padded[:, 1:], z)
    seen.clear()
    engine.eval()
    c, uc = engine.conditioner.get_unconditional_conditioning({"txt": ["x"]}, force_uc_zero_embeddings=["txt"])
    c["concat"] = uc["concat"] = torch.zeros(1, 4, *LATENT[1:])
    engine.sample(c, uc=uc, batch_size=1, shape=(4, *LATENT[1:]))
    assert len(seen) == 3 and all(torch.equal(o, torch.tensor([2.0])) for _, o in seen)


def test_without_padding_latents_are_untouched(t5_dir):
    engine = build(model_config("tiny_i2v", t5_dir, **{"network_config.params.patch_size": [2, 2, 2]}))
    z = torch.randn(1, *LATENT)
    assert engine.pad_latents(z) is z


def test_checkpoint_leaves_out_frozen_vae_and_t5(t5_dir):
    engine = build(model_config("tiny_t2v_lora", t5_dir))
    engine.disable_untrainable_params()
    keys = list(engine.checkpoint_state_dict())
    assert keys and all(k.startswith("model.diffusion_model.") for k in keys)
    assert any(k.endswith("matrix_A.0") for k in keys)
    full = engine.checkpoint_state_dict(include_frozen_modules=True)
    assert any(k.startswith("first_stage_model.") for k in full)
    assert any(k.startswith("conditioner.") for k in full)
    assert set(full) == set(engine.state_dict())


def test_legacy_lora_train_sets_lr_scale_instead_of_freezing(t5_dir):
    engine = build(model_config("tiny_t2v", t5_dir, lora_train=True))
    before = {n for n, p in engine.named_parameters() if p.requires_grad}
    assert engine.disable_untrainable_params() == 0  # no 'lora_layer' parameters here
    assert {n for n, p in engine.named_parameters() if p.requires_grad} == before
    assert all(getattr(p, "lr_scale", None) == 0 for n, p in engine.named_parameters() if n in before)


def test_model_keys_are_checked(t5_dir):
    cfg = model_config("tiny_t2v", t5_dir)
    cfg.scale_facter = 0.7
    with pytest.raises(ValueError, match="scale_facter.*scale_factor"):
        build(cfg)
    cfg = model_config("tiny_t2v", t5_dir, lr_scale=2)
    with pytest.raises(ValueError, match="lr_scale"):
        build(cfg)


def test_engine_keys_cover_the_official_configs():
    paths = sorted(OFFICIAL_CONFIGS.glob("cogvideox*.yaml"))
    if not paths:
        pytest.skip("official configs not found")
    for path in paths:
        keys = set(OmegaConf.load(path).model)
        assert keys <= ENGINE_KEYS, (path.name, keys - ENGINE_KEYS)
    assert "pad_latent_frames" in ENGINE_KEYS and "augmentation_dropout" in ENGINE_KEYS


def test_data_parallel_position_reaches_the_index_sampler(t5_dir, monkeypatch):
    from cogvideox_sat import distributed

    monkeypatch.setattr(distributed, "get_data_parallel_rank", lambda: 13)
    monkeypatch.setattr(distributed, "get_data_parallel_world_size", lambda: 16)
    cfg = model_config("tiny_t2v", t5_dir, **{"loss_fn_config.params.sigma_sampler_config.params.group_num": 4})
    sampler = build(cfg).loss_fn.sigma_sampler
    assert sampler.uniform_sampling and sampler.index_range() == (750, 1000)
