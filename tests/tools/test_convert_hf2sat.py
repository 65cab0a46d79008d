"""tools/convert_weight_hf2sat.py: diffusers folders -> the released SAT layout, exactly.

Both round trips at tiny size for every variant (SAT -> sat2hf -> hf2sat gives the same
tensors; a diffusers-made model -> hf2sat -> sat2hf gives diffusers' state dict), the imported
model computes what diffusers computes, the written YAML validates, `--load` takes a diffusers
folder, and a diffusers LoRA becomes one of our LoRA runs with its rank and alpha."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tools_testkit import REPO, load_tool, model_yaml, tiny_dit, tiny_vae
from safetensors.torch import load_file, save_file

from cogvideox_sat.config import load_configs
from cogvideox_sat.io import load_sat_checkpoint, read_module_state, resolve_checkpoint_file
from cogvideox_sat.io.diffusers_configs import build_dit_on_meta, transformer_config
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import LAYERS, VARIANTS, inputs, network_config

diffusers = pytest.importorskip("diffusers")
from tests.models.test_dit_diffusers_parity import max_rel_err, reference_forward  # noqa: E402

HF2SAT = load_tool("convert_weight_hf2sat")
SAT2HF = load_tool("convert_weight_sat2hf")
PRESET = {"2b": "cogvideox_2b", "5b": "cogvideox_5b", "5b_i2v": "cogvideox_5b_i2v", "1.5": "cogvideox1.5_5b", "1.5_i2v": "cogvideox1.5_5b_i2v"}


def run(tool, *argv) -> int:
    return tool.main([str(a) for a in argv])


def sat_state(folder: Path) -> dict[str, torch.Tensor]:
    return read_module_state(resolve_checkpoint_file(folder))


def diffusers_model(variant: str, seed: int = 0, dtype: torch.dtype = torch.float32, **config):
    """A randomly initialised diffusers transformer with the tiny variant's config (`config` overrides)."""
    torch.manual_seed(seed)
    model = diffusers.CogVideoXTransformer3DModel(**{**transformer_config(build_dit_on_meta(network_config(variant))), **config})
    with torch.no_grad():
        for p in model.parameters():  # the default init zeroes some outputs; make every tensor matter
            p.add_(0.05 * torch.randn_like(p))
    return model.to(dtype).eval()


def released_layout(variant: str) -> dict[str, torch.Tensor]:
    """A tiny checkpoint as released SAT files hold it (1.0: Conv2d patch projection)."""
    state = {"model.diffusion_model." + k: v for k, v in tiny_dit(variant).state_dict().items()}
    key = "model.diffusion_model.mixins.patch_embed.proj.weight"
    if not variant.startswith("1.5"):
        state[key] = state[key].reshape(state[key].shape[0], -1, 2, 2)
    return state


@pytest.mark.parametrize("variant", VARIANTS)
def test_sat_to_diffusers_and_back_is_identical(variant, tmp_path):
    from cogvideox_sat.io.sat_writer import write_sat_checkpoint

    state = released_layout(variant)
    write_sat_checkpoint(state, tmp_path / "sat")
    assert run(SAT2HF, "--config", model_yaml(tmp_path / "m.yaml", variant), "--transformer_ckpt_path", tmp_path / "sat", "--output_path", tmp_path / "hf") == 0
    assert run(HF2SAT, "--transformer_path", tmp_path / "hf" / "transformer", "--output_path", tmp_path / "back") == 0
    back = sat_state(tmp_path / "back" / "transformer")
    assert set(back) == set(state)
    legacy = "model.diffusion_model.transformer.position_embeddings.weight"  # unused by SAT; ours builds it as zeros
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    assert (tmp_path / "back" / "transformer" / "latest").read_text() == "1"
    assert legacy not in state or not back[legacy].any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_diffusers_model_round_trip_and_forward(variant, tmp_path):
    ref = diffusers_model(variant)
    ref.save_pretrained(str(tmp_path / "hf"))
    assert run(HF2SAT, "--transformer_path", tmp_path / "hf", "--output_path", tmp_path / "sat") == 0
    config = tmp_path / "sat" / f"{PRESET[variant]}.yaml"

    # back to diffusers with the written config: diffusers' own state dict
    assert run(SAT2HF, "--config", config, "--transformer_ckpt_path", tmp_path / "sat" / "transformer", "--output_path", tmp_path / "again") == 0
    again = load_file(str(tmp_path / "again" / "transformer" / "diffusion_pytorch_model.safetensors"))
    want = ref.state_dict()
    assert set(again) == set(want)
    for key, value in want.items():
        assert again[key].dtype == value.dtype and torch.equal(again[key], value), key

    # our DiT, built from the written config and loaded from the written folder
    dit = instantiate_from_config(load_configs([config]).section("model")["network_config"]).eval()
    report = load_sat_checkpoint(dit, tmp_path / "sat" / "transformer")
    assert report.ok and not report.kept
    kwargs = inputs(variant)
    with torch.no_grad():
        ours = dit(**kwargs)
        as_saved = reference_forward(ref, variant, kwargs)
        ref.norm_out.norm.eps = 1e-6  # SAT's FinalLayerMixin eps; diffusers' config says 1e-5
        same_eps = reference_forward(ref, variant, kwargs)
    assert max_rel_err(ours, same_eps) <= 1e-5
    assert max_rel_err(ours, as_saved) <= 2e-5


def test_dtype_kept_or_cast(tmp_path):
    ref = diffusers_model("5b", dtype=torch.bfloat16)
    ref.save_pretrained(str(tmp_path / "hf"))
    assert run(HF2SAT, "--transformer_path", tmp_path / "hf", "--output_path", tmp_path / "kept") == 0
    assert {v.dtype for v in sat_state(tmp_path / "kept" / "transformer").values()} == {torch.bfloat16}
    assert run(HF2SAT, "--transformer_path", tmp_path / "hf", "--output_path", tmp_path / "cast", "--dtype", "fp16") == 0
    assert {v.dtype for v in sat_state(tmp_path / "cast" / "transformer").values()} == {torch.float16}


def test_sharded_pipeline_folder_with_vae_t5_and_validating_config(tmp_path):
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
    from cogvideox_sat.io.diffusers_vae_keys import sat_vae_to_diffusers

    from transformers import T5EncoderModel, T5Tokenizer

    # a pipeline folder as the hub holds them: transformer in shards, vae, text_encoder, tokenizer
    t5 = make_tiny_t5(tmp_path / "t5", d_model=32)
    vae = tiny_vae()
    sat_vae = tmp_path / "3d-vae.pt"
    torch.save({"state_dict": vae.state_dict()}, sat_vae)
    assert run(SAT2HF, "--config", model_yaml(tmp_path / "m.yaml", "5b_i2v"), "--vae_ckpt_path", sat_vae, "--output_path", tmp_path / "hfvae") == 0
    hf_vae = diffusers.AutoencoderKLCogVideoX.from_pretrained(str(tmp_path / "hfvae" / "vae"))
    pipe = diffusers.CogVideoXImageToVideoPipeline(
        tokenizer=T5Tokenizer.from_pretrained(str(t5)), text_encoder=T5EncoderModel.from_pretrained(str(t5)),
        # the learned table sized for configs/sft.yaml's 49 x 480 x 720 clips, as the released model's
        vae=hf_vae, transformer=diffusers_model("5b_i2v", sample_frames=49, sample_height=60, sample_width=90),
        scheduler=diffusers.CogVideoXDDIMScheduler(),
    )
    pipe.save_pretrained(str(tmp_path / "pipe"), max_shard_size="20KB")
    index = tmp_path / "pipe" / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    assert index.is_file() and len(set(json.loads(index.read_text())["weight_map"].values())) > 1

    out = tmp_path / "sat"
    assert run(HF2SAT, "--transformer_path", tmp_path / "pipe", "--output_path", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cogvideox_5b_i2v.yaml", "t5-v1_1-xxl", "transformer", "vae"]
    saved_vae = torch.load(out / "vae" / "3d-vae.pt", weights_only=True)["state_dict"]
    assert set(saved_vae) == set(vae.state_dict()) and all(torch.equal(saved_vae[k], v) for k, v in vae.state_dict().items())
    assert sat_vae_to_diffusers(saved_vae).keys() == hf_vae.state_dict().keys()
    T5EncoderModel.from_pretrained(str(out / "t5-v1_1-xxl"))
    T5Tokenizer.from_pretrained(str(out / "t5-v1_1-xxl"))

    # the written config runs with no editing (here: validated by both scripts)
    config = out / "cogvideox_5b_i2v.yaml"
    model = load_configs([config]).section("model")
    assert model["first_stage_config"]["params"]["ckpt_path"] == str(out / "vae" / "3d-vae.pt")
    assert model["scale_factor"] == hf_vae.config.scaling_factor
    (tmp_path / "disney").mkdir()  # the relative data and prompt paths the two overlays name
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "test.txt").write_text("a cat@@image.png\n")
    for script, overlay in (("train_video.py", "configs/sft.yaml"), ("sample_video.py", "configs/inference.yaml")):
        proc = subprocess.run([sys.executable, str(REPO / script), "--base", str(REPO / overlay), str(config), "--validate-only"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]


def test_load_accepts_a_diffusers_folder(tmp_path):
    ref = diffusers_model("2b")
    ref.save_pretrained(str(tmp_path / "hf"))
    dit = instantiate_from_config(network_config("2b")).eval()
    report = load_sat_checkpoint(dit, tmp_path / "hf")
    assert report.ok and "converted in memory" in report.source
    assert report.kept == ["mixins.pos_embed.pos_embedding"]  # the sin-cos table: computed, not stored by diffusers
    kwargs = inputs("2b")
    ref.norm_out.norm.eps = 1e-6
    with torch.no_grad():
        assert max_rel_err(dit(**kwargs), reference_forward(ref, "2b", kwargs)) <= 1e-5

    from cogvideox_sat.config.rules import _checkpoint_folder_problems
    from cogvideox_sat.sampling.weights import dit_state

    assert list(_checkpoint_folder_problems(None, "args.load", str(tmp_path / "hf"))) == []
    assert "transformer.layers.0.attention.query_key_value.weight" in dit_state(tmp_path / "hf")[1]


# ---- LoRA ------------------------------------------------------------------------------------


def peft_lora(transformer, rank: int, alpha: float, targets: list[str], seed: int = 1) -> dict[str, torch.Tensor]:
    """Adapters as diffusers trains them (PEFT), B made non-zero; returns diffusers' LoRA state."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return get_peft_model_state_dict(transformer)


@pytest.mark.parametrize("variant", ["5b", "1.5_i2v"])
def test_diffusers_lora_becomes_our_lora_run(variant, tmp_path):
    pytest.importorskip("peft")
    base = diffusers_model(variant)
    base.save_pretrained(str(tmp_path / "hf"))
    targets = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.2"]
    lora = peft_lora(base, rank=4, alpha=8, targets=targets)
    diffusers.CogVideoXPipeline.save_lora_weights(
        str(tmp_path / "lora"), transformer_lora_layers=lora, transformer_lora_adapter_metadata=base.peft_config["default"].to_dict()
    )
    assert run(HF2SAT, "--transformer_path", tmp_path / "hf", "--lora_path", tmp_path / "lora", "--output_path", tmp_path / "sat") == 0

    config = load_configs([tmp_path / "sat" / f"{PRESET[variant]}_lora.yaml"])
    params = config.section("model")["network_config"]["params"]["modules"]["lora_config"]["params"]
    assert (params["r"], params["lora_alpha"]) == (4, 8.0)
    assert set(params["target_modules"]) == {"attention.query_key_value", "attention.dense", "mlp.dense_4h_to_h"}
    assert config.section("args")["lora_load"] == str(tmp_path / "sat" / "lora")
    adapters = sat_state(tmp_path / "sat" / "lora")
    assert len(adapters) == 2 * 5 * LAYERS and all(".matrix_" in k for k in adapters)

    # our LoRA model: base from transformer/, adapters the way sampling / finetune load them
    from cogvideox_sat.sampling.weights import load_lora

    dit = instantiate_from_config(config.section("model")["network_config"]).eval()
    load_sat_checkpoint(dit, tmp_path / "sat" / "transformer")
    engine = type("Engine", (), {"model": type("Model", (), {"diffusion_model": dit})()})()
    assert load_lora(engine, tmp_path / "sat" / "lora").ok
    base.norm_out.norm.eps = 1e-6
    kwargs = inputs(variant)
    with torch.no_grad():
        with_lora = reference_forward(base, variant, kwargs)
        base.disable_adapters()
        without = reference_forward(base, variant, kwargs)
        ours = dit(**kwargs)
    assert max_rel_err(ours, with_lora) <= 1e-5
    assert max_rel_err(ours, without) > 1e-3  # the adapters matter, so a wrong scale would show


def test_sat_lora_to_diffusers_and_back_is_identical(tmp_path):
    lora = {"r": 4, "lora_alpha": 4, "target_modules": ["attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h"]}
    model = tiny_dit("2b", lora=lora)
    state = model.state_dict()
    base = {"model.diffusion_model." + k.replace(".original.", "."): v for k, v in state.items() if ".matrix_" not in k}
    adapters = {"model.diffusion_model." + k: v for k, v in state.items() if ".matrix_" in k}
    from cogvideox_sat.io.sat_writer import write_sat_checkpoint

    write_sat_checkpoint(base, tmp_path / "base")
    write_sat_checkpoint(adapters, tmp_path / "run")
    assert run(SAT2HF, "--config", model_yaml(tmp_path / "m.yaml", "2b"), "--transformer_ckpt_path", tmp_path / "base", "--output_path", tmp_path / "hf") == 0
    export = load_tool("export_sat_lora_weight")
    assert run(export, "--sat_pt_path", tmp_path / "run", "--lora_alpha", "4", "--lora_save_directory", tmp_path / "hflora") == 0
    assert run(HF2SAT, "--transformer_path", tmp_path / "hf" / "transformer", "--lora_path", tmp_path / "hflora" / "pytorch_lora_weights.safetensors",
               "--output_path", tmp_path / "sat") == 0
    back = sat_state(tmp_path / "sat" / "lora")
    assert set(back) == set(adapters) and all(torch.equal(back[k], v) for k, v in adapters.items())
    params = load_configs([tmp_path / "sat" / "cogvideox_2b_lora.yaml"]).section("model")["network_config"]["params"]["modules"]["lora_config"]["params"]
    assert (params["r"], params["lora_alpha"]) == (4, 4.0)


def test_kohya_lora_keys(tmp_path):
    ref = diffusers_model("5b")
    ref.save_pretrained(str(tmp_path / "hf"))
    gen = torch.Generator().manual_seed(0)
    kohya = {}
    for i in range(LAYERS):
        for module, (out_f, in_f) in (("attn1_to_q", (64, 64)), ("attn1_to_k", (64, 64)), ("attn1_to_v", (64, 64))):
            name = f"lora_unet_transformer_blocks_{i}_{module}"
            kohya[f"{name}.lora_down.weight"] = torch.randn(2, in_f, generator=gen)
            kohya[f"{name}.lora_up.weight"] = torch.randn(out_f, 2, generator=gen)
            kohya[f"{name}.alpha"] = torch.tensor(1.0)
    save_file(kohya, str(tmp_path / "kohya.safetensors"))
    assert run(HF2SAT, "--transformer_path", tmp_path / "hf", "--lora_path", tmp_path / "kohya.safetensors", "--output_path", tmp_path / "sat") == 0
    back = sat_state(tmp_path / "sat" / "lora")
    assert torch.equal(back["model.diffusion_model.transformer.layers.1.attention.query_key_value.matrix_A.2"],
                       kohya["lora_unet_transformer_blocks_1_attn1_to_v.lora_down.weight"])
    params = load_configs([tmp_path / "sat" / "cogvideox_5b_lora.yaml"]).section("model")["network_config"]["params"]["modules"]["lora_config"]["params"]
    assert (params["r"], params["lora_alpha"], params["target_modules"]) == (2, 1.0, ["attention.query_key_value"])


# ---- refusals: the file and key named, nothing written -----------------------------------------


def refused(tmp_path: Path, capsys, *argv) -> str:
    assert run(HF2SAT, *argv, "--output_path", tmp_path / "out") == 2
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]
    return capsys.readouterr().err


def test_refusals(tmp_path, capsys):
    ref = diffusers_model("5b")
    ref.save_pretrained(str(tmp_path / "hf"))

    # a folder of the wrong kind
    err = refused(tmp_path, capsys, "--transformer_path", tmp_path)
    assert "neither a diffusers model folder (config.json) nor a pipeline folder" in err
    err = refused(tmp_path, capsys, "--transformer_path", tmp_path / "hf", "--vae_path", tmp_path / "hf")
    assert f"{tmp_path / 'hf' / 'config.json'}: _class_name is 'CogVideoXTransformer3DModel', expected AutoencoderKLCogVideoX" in err

    # an unknown key: the file and the key named
    state = load_file(str(tmp_path / "hf" / "diffusion_pytorch_model.safetensors"))
    state["transformer_blocks.0.attn1.to_added.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "hf" / "diffusion_pytorch_model.safetensors"))
    err = refused(tmp_path, capsys, "--transformer_path", tmp_path / "hf")
    assert "diffusion_pytorch_model.safetensors" in err and "transformer_blocks.0.attn1.to_added.weight" in err

    # a missing shard
    ref.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    shards = sorted((tmp_path / "sharded").glob("*-of-*.safetensors"))
    shards[-1].unlink()
    err = refused(tmp_path, capsys, "--transformer_path", tmp_path / "sharded")
    assert shards[-1].name in err and "index.json" in err

    # LoRA on modules SAT's LoRA cannot wrap
    del state["transformer_blocks.0.attn1.to_added.weight"]
    save_file(state, str(tmp_path / "hf" / "diffusion_pytorch_model.safetensors"))
    lora = {"transformer.transformer_blocks.0.norm1.linear.lora_A.weight": torch.zeros(2, 32),
            "transformer.transformer_blocks.0.norm1.linear.lora_B.weight": torch.zeros(384, 2)}
    save_file(lora, str(tmp_path / "pytorch_lora_weights.safetensors"))
    err = refused(tmp_path, capsys, "--transformer_path", tmp_path / "hf", "--lora_path", tmp_path / "pytorch_lora_weights.safetensors")
    assert "transformer_blocks.0.norm1.linear" in err and "does not wrap" in err


def test_config_values_sat_cannot_reproduce(tmp_path, capsys):
    diffusers_model("5b").save_pretrained(str(tmp_path / "hf"))
    config_file = tmp_path / "hf" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "activation_fn": "gelu", "norm_elementwise_affine": True}))
    err = refused(tmp_path, capsys, "--transformer_path", tmp_path / "hf")
    assert f"{config_file}: the SAT model cannot reproduce activation_fn: 'gelu'" in err
    del config["num_layers"]
    config_file.write_text(json.dumps(config))
    assert "no 'num_layers'" in refused(tmp_path, capsys, "--transformer_path", tmp_path / "hf")
