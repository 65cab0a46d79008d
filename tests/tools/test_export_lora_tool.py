"""tools/export_sat_lora_weight.py: the exported file, loaded by diffusers' own
`pipe.load_lora_weights`, reproduces our LoRA model (alpha/r preserved, MLP adapters included)."""

from __future__ import annotations

import pytest
import torch
from _tools_testkit import load_tool, model_yaml, save_engine_checkpoint, tiny_dit
from safetensors.torch import load_file

from cogvideox_sat.io.sat_writer import write_sat_checkpoint
from tests.models.dit_cases import LAYERS, inputs

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")
from tests.models.test_dit_diffusers_parity import max_rel_err, reference_forward  # noqa: E402

EXPORT = load_tool("export_sat_lora_weight")
CONVERT = load_tool("convert_weight_sat2hf")
ALL_TARGETS = ["attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"]


def base_pipeline(tmp_path, model, variant: str):
    """The LoRA model's base converted with the sat2hf tool, in a pipeline without T5/VAE."""
    base = {"model.diffusion_model." + k.replace(".original.", "."): v for k, v in model.state_dict().items() if ".matrix_" not in k}
    write_sat_checkpoint(base, tmp_path / "base")
    cfg = model_yaml(tmp_path / "base.yaml", variant)
    assert CONVERT.main(["--config", str(cfg), "--transformer_ckpt_path", str(tmp_path / "base"), "--output_path", str(tmp_path / "hf")]) == 0
    transformer = diffusers.CogVideoXTransformer3DModel.from_pretrained(str(tmp_path / "hf" / "transformer")).eval()
    transformer.norm_out.norm.eps = 1e-6  # SAT's value (see test_convert_sat2hf)
    scheduler = diffusers.CogVideoXDDIMScheduler.from_pretrained(str(tmp_path / "hf" / "scheduler"))
    return diffusers.CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)


@pytest.mark.parametrize(
    ("variant", "targets", "layout"),
    [
        ("5b", ALL_TARGETS, "ours: adapters only, alpha from --config"),
        ("2b", ALL_TARGETS[:2], "sat: base + adapters, alpha from training_config.yaml"),
        ("1.5_i2v", ALL_TARGETS[1:], "ours: adapters only, alpha from --lora_alpha"),
    ],
)
def test_load_lora_weights_reproduces_our_lora_model(variant, targets, layout, tmp_path):
    lora = {"r": 4, "lora_alpha": 3, "target_modules": targets}
    model = tiny_dit(variant, lora=lora)  # randomized: B != 0
    state = model.state_dict()
    run = tmp_path / "run"
    if layout.startswith("ours"):
        write_sat_checkpoint({"model.diffusion_model." + k: v for k, v in state.items() if ".matrix_" in k}, run)
    else:
        save_engine_checkpoint(run, model)
    if "--config" in layout:
        alpha = ["--config", str(model_yaml(tmp_path / "lora.yaml", variant, lora=lora))]
    elif "training_config" in layout:
        model_yaml(run / "training_config.yaml", variant, lora=lora)
        alpha = []
    else:
        alpha = ["--lora_alpha", "3"]
    assert EXPORT.main(["--sat_pt_path", str(run / "1" if "sat" in layout else run), "--lora_save_directory", str(tmp_path / "lora"), *alpha]) == 0

    saved = load_file(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    per_layer = sum(3 if t.endswith("query_key_value") else 1 for t in targets)
    assert len(saved) == 2 * per_layer * LAYERS and all(k.startswith("transformer.transformer_blocks.") for k in saved)

    pipe = base_pipeline(tmp_path, model, variant)
    kwargs = inputs(variant)
    with torch.no_grad():
        without = reference_forward(pipe.transformer, variant, kwargs)
        pipe.load_lora_weights(str(tmp_path / "lora"), adapter_name="sat")
        with_lora = reference_forward(pipe.transformer, variant, kwargs)
        ours = model(**kwargs)
    assert max_rel_err(ours, with_lora) <= 1e-5
    assert max_rel_err(ours, without) > 1e-3  # the adapters matter, so a wrong scale would show


def test_refuses_without_alpha_and_without_adapters(tmp_path, capsys):
    state = tiny_dit("5b", lora={"r": 2}).state_dict()
    write_sat_checkpoint({"model.diffusion_model." + k: v for k, v in state.items() if ".matrix_" in k}, tmp_path / "lora")
    assert EXPORT.main(["--sat_pt_path", str(tmp_path / "lora"), "--lora_save_directory", str(tmp_path / "out")]) == 2
    assert "lora_alpha is not stored in the checkpoint" in capsys.readouterr().err

    save_engine_checkpoint(tmp_path / "plain", tiny_dit("5b"))
    assert EXPORT.main(["--sat_pt_path", str(tmp_path / "plain"), "--lora_save_directory", str(tmp_path / "out"), "--lora_alpha", "1"]) == 2
    assert "holds no LoRA adapters" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
