"""The rename tables at the released sizes, on the meta device (shapes only, no memory): every
released SAT config maps strictly onto a diffusers model whose config has the values of
diffusers' released CogVideoX configs; the released 1.0 weights' Conv2d patch layout converts."""

from __future__ import annotations

import pytest
import torch

from cogvideox_sat.config import load_configs
from cogvideox_sat.io.diffusers_configs import build_dit_on_meta, scheduler_config
from tests.conftest import REPO

diffusers = pytest.importorskip("diffusers")
from cogvideox_sat.io.diffusers_export import convert_transformer, convert_vae  # noqa: E402

# values of diffusers' released transformer configs (THUDM/CogVideoX*-{2b,5b,5b-I2V}, CogVideoX1.5-5B[-I2V])
RELEASED = {
    "cogvideox_2b.yaml": dict(num_layers=30, num_attention_heads=30, in_channels=16, use_rotary_positional_embeddings=False,
                             use_learned_positional_embeddings=False, patch_size_t=None, ofs_embed_dim=None, spatial_interpolation_scale=1.875,
                             sample_height=60, sample_width=90, sample_frames=49, max_text_seq_length=226),
    "cogvideox_5b.yaml": dict(num_layers=42, num_attention_heads=48, in_channels=16, use_rotary_positional_embeddings=True,
                             use_learned_positional_embeddings=False, patch_size_t=None, ofs_embed_dim=None),
    "cogvideox_5b_i2v.yaml": dict(num_layers=42, num_attention_heads=48, in_channels=32, use_rotary_positional_embeddings=True,
                                 use_learned_positional_embeddings=True, patch_size_t=None, ofs_embed_dim=None),
    "cogvideox1.5_5b.yaml": dict(num_layers=42, num_attention_heads=48, in_channels=16, use_rotary_positional_embeddings=True,
                                patch_size_t=2, patch_bias=False, ofs_embed_dim=None, sample_frames=81),
    "cogvideox1.5_5b_i2v.yaml": dict(num_layers=42, num_attention_heads=48, in_channels=32, use_rotary_positional_embeddings=True,
                                    patch_size_t=2, patch_bias=False, ofs_embed_dim=512, sample_frames=81),
}
COMMON = dict(attention_head_dim=64, out_channels=16, time_embed_dim=512, text_embed_dim=4096, patch_size=2, temporal_compression_ratio=4,
              norm_eps=1e-5, activation_fn="gelu-approximate", flip_sin_to_cos=True, freq_shift=0)


def model_section(name: str) -> dict:
    return load_configs([REPO / "configs" / name]).section("model")


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_transformer_maps_strictly(name):
    section = model_section(name)
    sat = build_dit_on_meta(section["network_config"]).state_dict()
    model = convert_transformer(sat, section["network_config"])  # strict load inside
    for key, value in {**COMMON, **RELEASED[name]}.items():
        assert model.config[key] == value, key
    # every SAT tensor went somewhere: diffusers' count = SAT's minus the dropped tables, plus the split
    layers = RELEASED[name]["num_layers"]
    dropped = sum(k in sat for k in ("transformer.position_embeddings.weight",)) + ("2b" in name)
    split = layers * (2 * 2 + 2 * 1)  # qkv -> q, k, v (weight, bias); adaLN -> norm1, norm2 (weight, bias)
    assert len(model.state_dict()) == len(sat) - dropped + split
    shift = scheduler_config(section)[1]["snr_shift_scale"]
    assert shift == (3.0 if "2b" in name else 1.0)


def test_released_conv_patch_layout_converts_like_the_linear_one():
    section = model_section("cogvideox_5b.yaml")
    sat = build_dit_on_meta(section["network_config"]).state_dict()
    linear = convert_transformer(sat, section["network_config"]).state_dict()["patch_embed.proj.weight"]
    sat["mixins.patch_embed.proj.weight"] = torch.empty(3072, 16, 2, 2, device="meta")  # released 1.0 SAT layout
    conv = convert_transformer(sat, section["network_config"]).state_dict()["patch_embed.proj.weight"]
    assert conv.shape == linear.shape == (3072, 16, 2, 2)


@pytest.mark.parametrize(("name", "scale", "invert"), [("cogvideox_2b.yaml", 1.15258426, False), ("cogvideox1.5_5b_i2v.yaml", 0.7, True)])
def test_released_vae_maps_strictly(name, scale, invert):
    from cogvideox_sat.registry import instantiate_from_config

    section = model_section(name)
    first_stage = {**section["first_stage_config"], "params": {**section["first_stage_config"]["params"], "ckpt_path": None}}
    with torch.device("meta"):
        sat = instantiate_from_config(first_stage).state_dict()
    vae = convert_vae(sat, first_stage, section["scale_factor"], invert_scale_latents=invert)
    assert list(vae.config.block_out_channels) == [128, 256, 256, 512]
    assert (vae.config.latent_channels, vae.config.layers_per_block, vae.config.scaling_factor, vae.config.invert_scale_latents) == (16, 3, scale, invert)
    with torch.device("meta"):
        default = diffusers.AutoencoderKLCogVideoX()  # the class defaults are the released VAE
    assert {k: v.shape for k, v in vae.state_dict().items()} == {k: v.shape for k, v in default.state_dict().items()}
