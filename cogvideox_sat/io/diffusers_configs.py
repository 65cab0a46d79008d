"""diffusers configs (transformer, VAE, scheduler) read from a SAT `model:` section, and back.

The architecture comes from the config the weights were trained with, so checkpoints of any size
convert: the DiT is built on the meta device (no memory) and its resolved attributes give
`CogVideoXTransformer3DModel`'s arguments; the VAE's come from `first_stage_config`, the
scheduler's from the denoiser's discretization. What diffusers cannot express raises
`ConversionError` instead of converting into a different model.

The way back (`network_from_diffusers`, `first_stage_from_diffusers`) starts from the repo
config of the matching released model (`MODEL_PRESETS`), writes in what the diffusers config
says, and proves itself by running the forward function on the result: any value that does not
come back unchanged is a `ConversionError` naming the config key.

One difference is inherent to diffusers' CogVideoX and not a conversion error: its output norm
(`norm_out`) uses `norm_eps` (1e-5) where SAT's FinalLayerMixin uses 1e-6.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from cogvideox_sat.models import Rotary3DPositionEmbeddingMixin
from cogvideox_sat.registry import instantiate_from_config, resolve_target


class ConversionError(ValueError):
    """A checkpoint or config cannot be converted; the message says why and what to do."""


# diffusers' released CogVideoX scheduler configs, apart from the per-model snr_shift_scale
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "snr_shift_scale": 1.0,
}
SCHEDULER_CLASSES: dict[str, str] = {"ddim": "CogVideoXDDIMScheduler", "dpm": "CogVideoXDPMScheduler"}
_PREDICTION = {"VideoScaling": "v_prediction"}
# (version, image-to-video, RoPE) -> the repo config of that released model
MODEL_PRESETS: dict[tuple[str, bool, bool], str] = {
    ("1.0", False, False): "cogvideox_2b.yaml",
    ("1.0", False, True): "cogvideox_5b.yaml",
    ("1.0", True, True): "cogvideox_5b_i2v.yaml",
    ("1.5", False, True): "cogvideox1.5_5b.yaml",
    ("1.5", True, True): "cogvideox1.5_5b_i2v.yaml",
}
# transformer_config keys that shape no tensor of a RoPE model without a learned table: the
# SAT preset's values stay (e.g. 1.5's 224 text tokens)
_RUNTIME_ONLY = ("max_text_seq_length",)


def build_dit_on_meta(network_config: Mapping[str, Any], keep_lora: bool = False) -> torch.nn.Module:
    """The DiT of `network_config` with meta tensors (shapes only, no memory). `lora_config` is
    dropped unless `keep_lora`: converted models are plain (adapters merged or exported apart)."""
    config = copy.deepcopy(_plain(network_config))
    modules = config.get("params", {}).get("modules", {})
    if not keep_lora:
        modules.pop("lora_config", None)
    with torch.device("meta"):
        return instantiate_from_config(config)


def is_image_to_video(model: torch.nn.Module) -> bool:
    """I2V DiTs take the image latents concatenated on channels."""
    return model.in_channels != model.out_channels


def cogvideox_version(model: torch.nn.Module) -> str:
    """'1.0' (one latent frame per token) or '1.5' (temporal patch 2)."""
    return "1.0" if model.patch_size[0] == 1 else "1.5"


def transformer_config(model: torch.nn.Module) -> dict[str, Any]:
    """`CogVideoXTransformer3DModel` arguments equal to a built `DiffusionTransformer`."""
    pos, patch_embed = model.mixins["pos_embed"], model.mixins["patch_embed"]
    rope = isinstance(pos, Rotary3DPositionEmbeddingMixin)
    pt, ph, pw = model.patch_size
    hi, wi, ti = (model.interpolation[k] for k in ("height_interpolation", "width_interpolation", "time_interpolation"))
    problems = []
    if "swiglu" in model.mixins or type(model.transformer.final_layernorm).__name__ != "LayerNorm":
        problems.append("SwiGLU / RMSNorm DiTs (use_SwiGLU, use_RMSNorm) have no diffusers CogVideoX equivalent")
    if model.num_classes is not None:
        problems.append("class-conditional DiTs (num_classes) have no diffusers CogVideoX equivalent")
    if ph != pw:
        problems.append(f"diffusers needs square spatial patches, got {ph}x{pw}")
    if patch_embed.text_proj is None:
        problems.append("patch_embed_config needs text_hidden_size (diffusers always projects the text)")
    if not rope and hi != wi:
        problems.append(f"diffusers has one spatial interpolation scale; height {hi} != width {wi}")
    if problems:
        raise ConversionError("; ".join(problems))
    return {
        "num_attention_heads": model.num_attention_heads,
        "attention_head_dim": model.hidden_size // model.num_attention_heads,
        "in_channels": model.in_channels,
        "out_channels": model.out_channels,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "time_embed_dim": model.time_embed_dim,
        "ofs_embed_dim": model.ofs_embed_dim,
        "text_embed_dim": patch_embed.text_proj.in_features,
        "num_layers": model.num_layers,
        "dropout": 0.0,
        "attention_bias": True,
        "sample_width": model.latent_width,
        "sample_height": model.latent_height,
        "sample_frames": model.num_frames,
        "patch_size": ph,
        "patch_size_t": None if pt == 1 else pt,
        "temporal_compression_ratio": model.time_compressed_rate,
        "max_text_seq_length": pos.text_length,
        "activation_fn": "gelu-approximate",
        "timestep_activation_fn": "silu",
        "norm_elementwise_affine": bool(model.elementwise_affine),
        "norm_eps": model.transformer_args.layernorm_epsilon,
        "spatial_interpolation_scale": hi,
        "temporal_interpolation_scale": ti,
        "use_rotary_positional_embeddings": rope,
        "use_learned_positional_embeddings": rope and pos.pos_embedding is not None,
        # diffusers' 1.5 configs say False; it only affects the 1.0 (Conv2d) patch projection
        "patch_bias": pt == 1,
    }


def diffusers_preset(config: Mapping[str, Any]) -> str:
    """The repo config name of the released model a diffusers transformer config is a variant of."""
    version = "1.0" if not config.get("patch_size_t") else "1.5"
    i2v = config.get("in_channels", 16) != config.get("out_channels", 16)
    rope = bool(config.get("use_rotary_positional_embeddings"))
    if (version, i2v, rope) not in MODEL_PRESETS:
        raise ConversionError(
            f"no released CogVideoX has patch_size_t {config.get('patch_size_t')}, in_channels {config.get('in_channels')} "
            f"/ out_channels {config.get('out_channels')}, use_rotary_positional_embeddings {rope}"
        )
    return MODEL_PRESETS[(version, i2v, rope)]


def network_from_diffusers(config: Mapping[str, Any], network_config: Mapping[str, Any], source: str = "config.json") -> dict[str, Any]:
    """The SAT `network_config` of a `CogVideoXTransformer3DModel` config, built on
    `network_config` (the preset's). Raises `ConversionError` naming each key of `config` that
    the SAT DiT would not reproduce, or that it lacks."""
    try:
        net = _network_from_diffusers(config, network_config)
    except KeyError as err:
        raise ConversionError(f"{source}: no {err.args[0]!r}, which a CogVideoXTransformer3DModel config has") from err
    tables = not config["use_rotary_positional_embeddings"] or config.get("use_learned_positional_embeddings")
    _check_round_trip(config, transformer_config(build_dit_on_meta(net)), source, skip=() if tables else _RUNTIME_ONLY)
    return net


def _network_from_diffusers(config: Mapping[str, Any], network_config: Mapping[str, Any]) -> dict[str, Any]:
    net = copy.deepcopy(_plain(network_config))
    params, modules = net["params"], net["params"]["modules"]
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    pt = config.get("patch_size_t") or 1
    params.update(
        num_layers=int(config["num_layers"]),
        num_attention_heads=heads,
        hidden_size=heads * head_dim,
        in_channels=int(config["in_channels"]),
        out_channels=int(config.get("out_channels") or config["in_channels"]),
        time_embed_dim=int(config["time_embed_dim"]),
        num_frames=int(config["sample_frames"]),
        latent_width=int(config["sample_width"]),
        latent_height=int(config["sample_height"]),
        time_compressed_rate=int(config["temporal_compression_ratio"]),
        patch_size=[int(pt), int(config["patch_size"]), int(config["patch_size"])],
        elementwise_affine=bool(config["norm_elementwise_affine"]),
    )
    params.pop("ofs_embed_dim", None)
    if config.get("ofs_embed_dim"):
        params["ofs_embed_dim"] = int(config["ofs_embed_dim"])
    params["transformer_args"]["layernorm_epsilon"] = float(config["norm_eps"])
    modules["patch_embed_config"].setdefault("params", {})["text_hidden_size"] = int(config["text_embed_dim"])
    pos = modules["pos_embed_config"].setdefault("params", {})
    tables = not config["use_rotary_positional_embeddings"] or config.get("use_learned_positional_embeddings")
    if tables:  # the sin-cos / learned table has a row per text token
        pos["text_length"] = int(config["max_text_seq_length"])
    if config["use_rotary_positional_embeddings"]:
        pos["hidden_size_head"] = head_dim
        pos.pop("learnable_pos_embed", None)
        if config.get("use_learned_positional_embeddings"):
            pos["learnable_pos_embed"] = True
    else:
        pos.update(
            height_interpolation=float(config["spatial_interpolation_scale"]),
            width_interpolation=float(config["spatial_interpolation_scale"]),
            time_interpolation=float(config["temporal_interpolation_scale"]),
        )
    return net


def first_stage_from_diffusers(config: Mapping[str, Any], first_stage_config: Mapping[str, Any], source: str = "config.json") -> dict[str, Any]:
    """The SAT `first_stage_config` of an `AutoencoderKLCogVideoX` config, built on the preset's."""
    stage = copy.deepcopy(_plain(first_stage_config))
    missing = [k for k in ("block_out_channels", "layers_per_block", "latent_channels", "in_channels", "out_channels") if k not in config]
    if missing:
        raise ConversionError(f"{source}: no {', '.join(missing)}, which an AutoencoderKLCogVideoX config has")
    channels = [int(c) for c in config["block_out_channels"]]
    ch = channels[0]
    if any(c % ch for c in channels):
        raise ConversionError(f"{source}: block_out_channels {channels} are not multiples of the first (SAT's ch x ch_mult)")
    shared = {
        "ch": ch,
        "ch_mult": [c // ch for c in channels],
        "num_res_blocks": int(config["layers_per_block"]),
        "z_channels": int(config["latent_channels"]),
        "in_channels": int(config["in_channels"]),
        "out_ch": int(config["out_channels"]),
        "temporal_compress_times": int(config.get("temporal_compression_ratio", 4)),
    }
    for part in ("encoder_config", "decoder_config"):
        stage["params"][part].setdefault("params", {}).update(shared)
    back = vae_config(stage, float(config.get("scaling_factor", 1.0)), bool(config.get("invert_scale_latents", False)))
    _check_round_trip(config, back, source, skip=("scaling_factor", "invert_scale_latents", "force_upcast"))
    return stage


def _check_round_trip(config: Mapping[str, Any], back: Mapping[str, Any], source: str, skip: tuple[str, ...] = ()) -> None:
    # dropout is a training setting, and patch_bias only exists for the 1.0 (Conv2d) projection
    skip = (*skip, "dropout") + (("patch_bias",) if config.get("patch_size_t") else ())
    wrong = [
        f"{key}: {config[key]!r} (SAT's CogVideoX gives {value!r})"
        for key, value in back.items()
        if key in config and key not in skip and _differs(config[key], value)
    ]
    if wrong:
        raise ConversionError(f"{source}: the SAT model cannot reproduce " + "; ".join(wrong))


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) > 1e-9 * max(abs(float(a)), 1.0)
    return a != b


def vae_config(first_stage_config: Mapping[str, Any], scaling_factor: float, invert_scale_latents: bool = False) -> dict[str, Any]:
    """`AutoencoderKLCogVideoX` arguments of an official `first_stage_config` block.
    `invert_scale_latents`: diffusers' CogVideoX1.5 configs set it (their I2V pipeline then
    divides the image latents by the scaling factor, as the official 1.5 sampling does)."""
    params = _plain(first_stage_config).get("params", {})
    enc = params["encoder_config"].get("params", {})
    dec = params["decoder_config"].get("params", {})
    for key in ("ch", "ch_mult", "num_res_blocks", "z_channels"):
        if enc.get(key) != dec.get(key):
            raise ConversionError(f"encoder and decoder differ in {key} ({enc.get(key)} vs {dec.get(key)}); diffusers shares it")
    if dec.get("add_conv") or dec.get("zq_ch") not in (None, dec["z_channels"]) or dec.get("give_pre_end"):
        raise ConversionError("decoder add_conv / zq_ch / give_pre_end have no diffusers equivalent")
    if not enc.get("double_z", True):
        raise ConversionError("encoder double_z: false (no log-variance) has no diffusers equivalent")
    levels = len(enc["ch_mult"])
    return {
        "in_channels": enc["in_channels"],
        "out_channels": dec["out_ch"],
        "down_block_types": ["CogVideoXDownBlock3D"] * levels,
        "up_block_types": ["CogVideoXUpBlock3D"] * levels,
        "block_out_channels": [enc["ch"] * m for m in enc["ch_mult"]],
        "latent_channels": enc["z_channels"],
        "layers_per_block": enc["num_res_blocks"],
        "act_fn": "silu",
        "norm_eps": 1e-6,
        "norm_num_groups": 32,
        "temporal_compression_ratio": enc.get("temporal_compress_times", 4),
        "scaling_factor": float(scaling_factor),
        "force_upcast": True,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "invert_scale_latents": bool(invert_scale_latents),
    }


def scheduler_config(
    model_section: Mapping[str, Any] | None, kind: str = "ddim", snr_shift_scale: float | None = None
) -> tuple[str, dict[str, Any]]:
    """(class name, config) of the CogVideoX scheduler matching the training schedule: the
    denoiser's ZeroSNRDDPMDiscretization (betas, shift_scale) and its scaling (v-prediction).
    Without a model section: the released values with `snr_shift_scale` (2B 3.0, others 1.0)."""
    if kind not in SCHEDULER_CLASSES:
        raise ConversionError(f"scheduler {kind!r}: choose one of {sorted(SCHEDULER_CLASSES)}")
    config = dict(SCHEDULER_DEFAULTS)
    denoiser = _plain((model_section or {}).get("denoiser_config") or {}).get("params", {})
    if denoiser:
        scaling = resolve_target(denoiser["scaling_config"]["target"]).__name__
        if scaling not in _PREDICTION:
            raise ConversionError(f"denoiser scaling {scaling} has no diffusers CogVideoX scheduler")
        config["prediction_type"] = _PREDICTION[scaling]
        disc = denoiser["discretization_config"]
        if resolve_target(disc["target"]).__name__ != "ZeroSNRDDPMDiscretization":
            raise ConversionError(f"discretization {disc['target']} has no diffusers CogVideoX scheduler")
        params = disc.get("params") or {}
        if params.get("keep_start") or params.get("post_shift"):
            raise ConversionError("keep_start / post_shift schedules have no diffusers CogVideoX scheduler")
        config.update(
            beta_start=params.get("linear_start", 0.00085),
            beta_end=params.get("linear_end", 0.012),
            num_train_timesteps=params.get("num_timesteps", 1000),
            snr_shift_scale=float(params.get("shift_scale", 1.0)),
        )
    if snr_shift_scale is not None:
        if denoiser and snr_shift_scale != config["snr_shift_scale"]:
            raise ConversionError(
                f"--snr_shift_scale {snr_shift_scale} disagrees with the config's shift_scale {config['snr_shift_scale']}"
            )
        config["snr_shift_scale"] = float(snr_shift_scale)
    return SCHEDULER_CLASSES[kind], config


def _plain(node: Any) -> Any:
    """OmegaConf containers as plain dicts/lists (plain input is returned as is)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return node
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node
