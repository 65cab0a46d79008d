"""tools/convert_weight_sat2hf.py, proven by diffusers itself: every tiny variant, the VAE and a
whole pipeline folder load with `from_pretrained` without missing/unexpected keys and compute
what our models compute; wrong versions and variants are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tools_testkit import load_tool, model_yaml, save_engine_checkpoint, tiny_dit, tiny_vae
from safetensors.torch import load_file

from cogvideox_sat.io.sat_writer import write_sat_checkpoint
from tests.models.dit_cases import VARIANTS, inputs

diffusers = pytest.importorskip("diffusers")
from tests.models.test_dit_diffusers_parity import max_rel_err, reference_forward  # noqa: E402

TOOL = load_tool("convert_weight_sat2hf")
CONDITIONER = {"conditioner.embedders.0.transformer.shared.weight": torch.ones(4, 2)}  # a full fine-tune's extra keys


def strict_load(cls, folder: Path):
    """from_pretrained, asserting diffusers found every tensor and nothing else."""
    model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    saved = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    assert set(saved) == set(model.state_dict())
    return model.eval()


def run_tool(*argv: str) -> int:
    return TOOL.main([str(a) for a in argv])


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformer_of_a_full_finetune_matches_diffusers(variant, tmp_path):
    dit = tiny_dit(variant)
    ckpt = save_engine_checkpoint(tmp_path / "ckpt", dit, tiny_vae(), extra=CONDITIONER)
    cfg = model_yaml(tmp_path / "model.yaml", variant)
    assert run_tool("--config", cfg, "--transformer_ckpt_path", ckpt, "--output_path", tmp_path / "out") == 0

    ref = strict_load(diffusers.CogVideoXTransformer3DModel, tmp_path / "out" / "transformer")
    kwargs = inputs(variant)
    with torch.no_grad():
        ours = dit(**kwargs)
        as_loaded = reference_forward(ref, variant, kwargs)
        ref.norm_out.norm.eps = 1e-6  # SAT's FinalLayerMixin eps; diffusers' config can only say 1e-5
        same_eps = reference_forward(ref, variant, kwargs)
    assert max_rel_err(ours, same_eps) <= 1e-6
    assert max_rel_err(ours, as_loaded) <= 2e-5
    scheduler = json.loads((tmp_path / "out" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "CogVideoXDDIMScheduler"
    assert (scheduler["snr_shift_scale"], scheduler["prediction_type"], scheduler["rescale_betas_zero_snr"]) == (3.0, "v_prediction", True)
    assert not (tmp_path / "out" / "model_index.json").exists()  # no VAE/T5: not a pipeline


def test_half_precision_output(tmp_path):
    dit = tiny_dit("5b")
    ckpt = save_engine_checkpoint(tmp_path / "ckpt", dit)
    cfg = model_yaml(tmp_path / "model.yaml", "5b")
    assert run_tool("--config", cfg, "--transformer_ckpt_path", ckpt / "1" / "mp_rank_00_model_states.pt", "--output_path", tmp_path / "out", "--bf16") == 0
    saved = load_file(str(tmp_path / "out" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.bfloat16}
    ref = diffusers.CogVideoXTransformer3DModel.from_pretrained(str(tmp_path / "out" / "transformer"))
    want = dit.state_dict()["transformer.layers.1.mlp.dense_4h_to_h.weight"].to(torch.bfloat16)
    assert torch.equal(ref.state_dict()["transformer_blocks.1.ff.net.2.weight"], want)


@pytest.mark.parametrize("layout", ["3d-vae.pt", "full fine-tune"])
def test_vae_matches_diffusers(layout, tmp_path):
    vae = tiny_vae()
    if layout == "3d-vae.pt":  # the released file: {'state_dict': encoder.*, decoder.*, loss.*}
        ckpt = tmp_path / "3d-vae.pt"
        torch.save({"state_dict": {**vae.state_dict(), "loss.logvar": torch.zeros(())}}, ckpt)
    else:
        ckpt = save_engine_checkpoint(tmp_path / "ckpt", tiny_dit("2b"), vae, extra=CONDITIONER)
    cfg = model_yaml(tmp_path / "model.yaml", "2b", scale_factor=1.15258426)
    assert run_tool("--config", cfg, "--vae_ckpt_path", ckpt, "--output_path", tmp_path / "out") == 0

    ref = strict_load(diffusers.AutoencoderKLCogVideoX, tmp_path / "out" / "vae")
    assert ref.config.scaling_factor == 1.15258426 and ref.config.invert_scale_latents is False
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(1, 3, 9, 32, 48, generator=gen)  # one diffusers encode batch (8 + 1 frames)
    latents = torch.randn(1, 4, 3, 4, 6, generator=gen)  # one diffusers decode batch (3 latent frames)
    with torch.no_grad():
        z_ours = vae.encode(frames)
        z_ref = ref.encode(frames).latent_dist.mode()
        x_ours, _ = vae.decode_chunk(latents, first_frame_separate=True, keep_state=False)
        x_ref = ref.decode(latents).sample
    assert z_ours.shape == z_ref.shape == (1, 4, 3, 4, 6)
    assert x_ours.shape == x_ref.shape == (1, 3, 9, 32, 48)
    assert max_rel_err(z_ours, z_ref) <= 1e-5
    assert max_rel_err(x_ours, x_ref) <= 1e-5


@pytest.mark.parametrize("variant", ["2b", "5b_i2v"])
def test_complete_pipeline_folder_runs_in_diffusers(variant, tmp_path):
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    t5 = make_tiny_t5(tmp_path / "t5", d_model=32)
    ckpt = save_engine_checkpoint(tmp_path / "ckpt", tiny_dit(variant), tiny_vae(), extra=CONDITIONER)
    cfg = model_yaml(tmp_path / "model.yaml", variant)
    out = tmp_path / "pipe"
    argv = ["--config", cfg, "--transformer_ckpt_path", ckpt, "--vae_ckpt_path", ckpt, "--text_encoder_path", t5, "--output_path", out]
    assert run_tool(*argv, "--scheduler", "dpm") == 0

    index = json.loads((out / "model_index.json").read_text())
    i2v = variant.endswith("i2v")
    assert index["_class_name"] == ("CogVideoXImageToVideoPipeline" if i2v else "CogVideoXPipeline")
    pipe = getattr(diffusers, index["_class_name"]).from_pretrained(str(out))
    assert type(pipe.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert pipe.scheduler.config.snr_shift_scale == 3.0 and pipe.vae.config.scaling_factor == 0.7
    kwargs = {"prompt": "a red square moving right", "num_frames": 9, "height": 64, "width": 96, "num_inference_steps": 2,
              "max_sequence_length": 8, "output_type": "latent", "generator": torch.Generator().manual_seed(0)}
    if i2v:
        from PIL import Image

        kwargs["image"] = Image.new("RGB", (96, 64), (200, 30, 30))
    latents = pipe(**kwargs).frames
    assert latents.shape == (1, 3, 4, 8, 12) and torch.isfinite(latents).all()


@pytest.mark.parametrize("layout", ["sat lora", "base + lora-only"])
def test_lora_checkpoints_are_merged_before_conversion(layout, tmp_path):
    lora = {"r": 4, "lora_alpha": 2, "target_modules": ["attention.query_key_value", "attention.dense", "mlp.dense_4h_to_h"]}
    model = tiny_dit("5b", lora=lora)  # randomized: B != 0, so the adapters matter
    cfg = model_yaml(tmp_path / "model.yaml", "5b", lora=lora)
    state = model.state_dict()
    if layout == "sat lora":  # SAT saves base (original.weight) and adapters together
        argv = ["--transformer_ckpt_path", save_engine_checkpoint(tmp_path / "ckpt", model)]
    else:  # ours: the base model, and a run holding only the adapters
        base = {"model.diffusion_model." + k.replace(".original.", "."): v for k, v in state.items() if ".matrix_" not in k}
        adapters = {"model.diffusion_model." + k: v for k, v in state.items() if ".matrix_" in k}
        write_sat_checkpoint(base, tmp_path / "base")
        write_sat_checkpoint(adapters, tmp_path / "lora")
        argv = ["--transformer_ckpt_path", tmp_path / "base", "--lora_ckpt_path", tmp_path / "lora"]
    assert run_tool("--config", cfg, *argv, "--output_path", tmp_path / "out") == 0
    ref = strict_load(diffusers.CogVideoXTransformer3DModel, tmp_path / "out" / "transformer")
    ref.norm_out.norm.eps = 1e-6
    kwargs = inputs("5b")
    with torch.no_grad():
        assert max_rel_err(model(**kwargs), reference_forward(ref, "5b", kwargs)) <= 1e-5


def test_run_folder_uses_its_training_config(tmp_path):
    dit = tiny_dit("1.5")
    run = save_engine_checkpoint(tmp_path / "run", dit)
    model_yaml(run / "training_config.yaml", "1.5")  # what our training writes beside `latest`
    assert run_tool("--transformer_ckpt_path", run / "1", "--output_path", tmp_path / "out") == 0
    ref = strict_load(diffusers.CogVideoXTransformer3DModel, tmp_path / "out" / "transformer")
    assert ref.config.patch_size_t == 2 and ref.config.num_layers == 2
    assert run_tool("--transformer_ckpt_path", run, "--version", "1.0", "--output_path", tmp_path / "again") == 2  # checked against it


# ---- refusals --------------------------------------------------------------------------------


def refusal(tmp_path: Path, capsys, *argv) -> str:
    assert run_tool(*argv, "--output_path", tmp_path / "out") == 2
    assert not (tmp_path / "out" / "transformer").exists()
    return capsys.readouterr().err


def test_wrong_version_for_the_config(tmp_path, capsys):
    ckpt = save_engine_checkpoint(tmp_path / "ckpt", tiny_dit("5b"))
    err = refusal(tmp_path, capsys, "--config", model_yaml(tmp_path / "m.yaml", "5b"), "--version", "1.5", "--transformer_ckpt_path", ckpt)
    assert "--version 1.5, but" in err and "CogVideoX 1.0 model" in err
    err = refusal(tmp_path, capsys, "--config", model_yaml(tmp_path / "m.yaml", "5b"), "--i2v", "--transformer_ckpt_path", ckpt)
    assert "--i2v, but" in err and "text-to-video" in err


def test_wrong_version_preset_names_the_size(tmp_path, capsys):
    ckpt = save_engine_checkpoint(tmp_path / "ckpt", tiny_dit("2b"))
    err = refusal(tmp_path, capsys, "--version", "1.0", "--transformer_ckpt_path", ckpt)
    assert "2 layers of width 64, expected 30 of width 1920" in err and "configs/cogvideox_2b.yaml" in err


@pytest.mark.parametrize(
    ("checkpoint", "config", "hints"),
    [
        ("1.5", "5b", ["temporal patch 2", "--version 1.5"]),
        ("5b", "1.5", ["--version 1.0"]),
        ("5b_i2v", "5b", ["image-to-video checkpoint, add --i2v", "positions: RoPE + learned table"]),
        ("2b", "5b_i2v", ["text-to-video checkpoint, drop --i2v"]),
        ("2b", "5b", ["positions: sin-cos, expected RoPE"]),
        ("1.5_i2v", "1.5", ["ofs embedding present"]),
    ],
)
def test_checkpoint_of_another_variant(checkpoint, config, hints, tmp_path, capsys):
    ckpt = save_engine_checkpoint(tmp_path / "ckpt", tiny_dit(checkpoint))
    err = refusal(tmp_path, capsys, "--config", model_yaml(tmp_path / "m.yaml", config), "--transformer_ckpt_path", ckpt)
    assert "does not fit the model of" in err and "It looks like" in err
    for hint in hints:
        assert hint in err


def test_lora_only_checkpoint_points_to_the_lora_tool(tmp_path, capsys):
    lora = {"r": 2, "lora_alpha": 2}
    state = tiny_dit("5b", lora=lora).state_dict()
    write_sat_checkpoint({"model.diffusion_model." + k: v for k, v in state.items() if ".matrix_" in k}, tmp_path / "lora")
    err = refusal(tmp_path, capsys, "--config", model_yaml(tmp_path / "m.yaml", "5b", lora=lora), "--transformer_ckpt_path", tmp_path / "lora")
    assert "holds only LoRA adapters" in err and "export_sat_lora_weight.py" in err


def test_zero3_folder_points_to_the_deepspeed_tool(tmp_path, capsys):
    (tmp_path / "run" / "2").mkdir(parents=True)
    (tmp_path / "run" / "latest").write_text("2")
    torch.save({}, tmp_path / "run" / "2" / "zero_pp_rank_0_mp_rank_00_model_states.pt")  # ZeRO-3: no mp_rank_00 file
    err = refusal(tmp_path, capsys, "--config", model_yaml(tmp_path / "m.yaml", "2b"), "--transformer_ckpt_path", tmp_path / "run")
    assert "ZeRO-3 checkpoint" in err and "convert_weight_deepspeed2hf.py" in err


def test_released_conv_patch_layout(tmp_path):
    dit = tiny_dit("5b")
    state = {"model.diffusion_model." + k: v for k, v in dit.state_dict().items()}
    proj = state["model.diffusion_model.mixins.patch_embed.proj.weight"]
    state["model.diffusion_model.mixins.patch_embed.proj.weight"] = proj.reshape(proj.shape[0], -1, 2, 2)  # 1.0 release layout
    write_sat_checkpoint(state, tmp_path / "ckpt")
    assert run_tool("--config", model_yaml(tmp_path / "m.yaml", "5b"), "--transformer_ckpt_path", tmp_path / "ckpt", "--output_path", tmp_path / "out") == 0
    ref = strict_load(diffusers.CogVideoXTransformer3DModel, tmp_path / "out" / "transformer")
    ref.norm_out.norm.eps = 1e-6
    kwargs = inputs("5b")
    with torch.no_grad():
        assert max_rel_err(dit(**kwargs), reference_forward(ref, "5b", kwargs)) <= 1e-6


def test_command_line(tmp_path):
    import subprocess
    import sys

    from _tools_testkit import REPO

    ckpt = save_engine_checkpoint(tmp_path / "ckpt", tiny_dit("2b"))
    cmd = [sys.executable, str(REPO / "tools" / "convert_weight_sat2hf.py"), "--config", str(model_yaml(tmp_path / "m.yaml", "2b")),
           "--transformer_ckpt_path", str(ckpt), "--output_path", str(tmp_path / "out"), "--fp16"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "transformer ->" in proc.stdout and (tmp_path / "out" / "transformer" / "config.json").is_file()
