"""SATVideoDiffusionEngine: DiT + VAE + T5 conditioner + diffusion loss and sampler.

Built like the official engine from `args.model_config` (the YAML `model:` section), with the
official key names and defaults; see ENGINE_KEYS. Layouts: videos in a batch are
[b, t, c, h, w] in [-1, 1] under `input_key`; the VAE works on [b, c, t, h, w]; the DiT,
the loss and the samplers on latents [b, t, c, h, w].

The training step is `shared_step(batch)`: encode the clip (and, for image-to-video, the
noised first frame), then `forward(latents, batch)`: condition, draw timestep + noise, make
the draw identical across the model-parallel group (`broadcast_noise_draw`, the only process
group call, at the step boundary), and compute the v-prediction loss.
"""

from __future__ import annotations

import difflib
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cogvideox_sat import distributed
from cogvideox_sat.diffusion.loss import NoiseDraw
from cogvideox_sat.diffusion.wrappers import OFFICIAL_DEFAULT_WRAPPER, OpenAIWrapper
from cogvideox_sat.dtypes import precision_from_flags
from cogvideox_sat.registry import instantiate_from_config, resolve_target
from cogvideox_sat.vae import first_stage

# Keys of the `model:` section. All official ones are accepted (augmentation_dropout, lr_scale
# and use_pd included, though the official code never uses the first and cannot run the second);
# pad_latent_frames is ours.
ENGINE_KEYS: frozenset[str] = frozenset(
    {
        "log_keys",
        "input_key",
        "network_config",
        "network_wrapper",
        "denoiser_config",
        "sampler_config",
        "conditioner_config",
        "first_stage_config",
        "loss_fn_config",
        "scale_factor",
        "latent_input",
        "disable_first_stage_autocast",
        "not_trainable_prefixes",
        "compile_model",
        "en_and_decode_n_samples_a_time",
        "lr_scale",
        "lora_train",
        "use_pd",
        "noised_image_input",
        "noised_image_all_concat",
        "noised_image_dropout",
        "augmentation_dropout",
        "pad_latent_frames",
    }
)

UNCONDITIONAL_CONFIG = {"target": "cogvideox_sat.conditioner.GeneralConditioner", "params": {"emb_models": []}}
# Offset value of CogVideoX 1.5 image-to-video ("ofs"); the official sampler and diffusers use 2.0.
OFS_VALUE = 2.0


def broadcast_noise_draw(draw: NoiseDraw) -> NoiseDraw:
    """Make a training step's timestep indices and noise identical across the model-parallel group."""
    distributed.broadcast_from_model_parallel_source(draw.tensors())
    return draw


class SATVideoDiffusionEngine(nn.Module):
    """The official engine's surface: shared_step, forward, encode/decode_first_stage, sample,
    log_video, disable_untrainable_params; submodules `model` (wrapper holding the DiT as
    `model.diffusion_model`, the checkpoint prefix), `denoiser`, `conditioner`,
    `first_stage_model` (frozen VAE), `loss_fn`, `sampler`.

    `args`: namespace with `model_config` (the `model:` section), `fp16`, `bf16`, `device`.
    `params_dtype` is accepted because SAT's get_model passes it; casting is the caller's job.
    """

    def __init__(self, args: Any, params_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        cfg: Mapping[str, Any] = args.model_config
        unknown = sorted(set(cfg) - ENGINE_KEYS)
        if unknown:
            hints = [f"{k} (did you mean {', '.join(difflib.get_close_matches(k, ENGINE_KEYS, 2)) or '-'}?)"
                     for k in unknown]
            raise ValueError(f"model config: unknown keys {', '.join(hints)}; valid keys: {sorted(ENGINE_KEYS)}")
        if cfg.get("lr_scale") is not None:
            raise ValueError(
                "model.lr_scale is not supported: the official code path interpolates 5D video with "
                "bilinear mode and cannot run; remove the key"
            )
        for required in ("network_config", "denoiser_config", "first_stage_config"):
            if cfg.get(required) is None:
                raise ValueError(f"model config: '{required}' is required")

        # 1. Settings
        self.log_keys = cfg.get("log_keys", None)
        self.input_key = cfg.get("input_key", "mp4")
        self.not_trainable_prefixes = list(cfg.get("not_trainable_prefixes", ["first_stage_model", "conditioner"]))
        self.en_and_decode_n_samples_a_time = cfg.get("en_and_decode_n_samples_a_time", None)
        self.lr_scale = None
        self.lora_train = bool(cfg.get("lora_train", False))
        self.use_pd = bool(cfg.get("use_pd", False))  # accepted; unused, as officially
        self.noised_image_input = bool(cfg.get("noised_image_input", False))
        self.noised_image_all_concat = bool(cfg.get("noised_image_all_concat", False))
        self.noised_image_dropout = float(cfg.get("noised_image_dropout", 0.0))
        self.augmentation_dropout = cfg.get("augmentation_dropout", None)  # accepted; unused, as officially
        self.pad_latent_frames = bool(cfg.get("pad_latent_frames", False))
        self.latent_input = bool(cfg.get("latent_input", False))
        self.scale_factor = float(cfg.get("scale_factor", 1.0))
        self.disable_first_stage_autocast = bool(cfg.get("disable_first_stage_autocast", False))
        self.dtype, self.dtype_str = precision_from_flags(args)
        self.device = getattr(args, "device", "cpu")

        # 2. Network (DiT inside the wrapper), denoiser, sampler, conditioner, VAE, loss
        self.model = self._build_network(cfg)
        self.denoiser = instantiate_from_config(cfg["denoiser_config"])
        sampler_config = cfg.get("sampler_config", None)
        self.sampler = instantiate_from_config(sampler_config) if sampler_config is not None else None
        conditioner_config = cfg.get("conditioner_config", None)
        self.conditioner = instantiate_from_config(
            conditioner_config if conditioner_config is not None else UNCONDITIONAL_CONFIG
        )
        self.first_stage_model = instantiate_from_config(cfg["first_stage_config"]).eval()
        self.first_stage_model.requires_grad_(False)
        if hasattr(self.first_stage_model, "set_context_parallel_group"):  # the run's group, handed to the VAE
            self.first_stage_model.set_context_parallel_group(distributed.get_context_parallel_group())
        loss_fn_config = cfg.get("loss_fn_config", None)
        self.loss_fn = instantiate_from_config(loss_fn_config) if loss_fn_config is not None else None
        self.configure_data_parallel(distributed.get_data_parallel_rank(), distributed.get_data_parallel_world_size())

    def _build_network(self, cfg: Mapping[str, Any]) -> nn.Module:
        network_config = cfg["network_config"]
        params = dict(network_config.get("params", None) or {})
        params["dtype"] = self.dtype_str  # as officially: the DiT computes in the run's precision
        network = instantiate_from_config({"target": network_config["target"], "params": params})
        wrapper_name = cfg.get("network_wrapper", None)
        wrapper = OpenAIWrapper if wrapper_name in (None, OFFICIAL_DEFAULT_WRAPPER) else resolve_target(wrapper_name)
        return wrapper(network, compile_model=bool(cfg.get("compile_model", False)), dtype=self.dtype)

    # ------------------------------------------------------------------ properties

    @property
    def diffusion_model(self) -> nn.Module:
        return self.model.diffusion_model

    @property
    def temporal_patch_size(self) -> int:
        patch = getattr(self.diffusion_model, "patch_size", 1)
        return int(patch[0]) if isinstance(patch, (list, tuple)) else 1

    @property
    def uses_ofs(self) -> bool:
        """CogVideoX 1.5 image-to-video: the DiT embeds an offset value `ofs`."""
        return getattr(self.diffusion_model, "ofs_embed_dim", None) is not None

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ setup

    def configure_data_parallel(self, rank: int, world_size: int) -> None:
        """Tell the loss's timestep sampler this rank's data-parallel position (uniform
        per-group sampling for worlds > 8 ranks). Called at construction from
        `cogvideox_sat.distributed`; call again if the engine was built before the groups."""
        sigma_sampler = getattr(self.loss_fn, "sigma_sampler", None)
        if hasattr(sigma_sampler, "set_data_parallel"):
            sigma_sampler.set_data_parallel(rank, world_size)

    def train(self, mode: bool = True) -> SATVideoDiffusionEngine:
        """The VAE stays in eval mode (frozen embedders too, see GeneralConditioner.train)."""
        super().train(mode)
        self.first_stage_model.eval()
        return self

    def disable_untrainable_params(self) -> int:
        """Freeze what must not train (official surface; the policy is training/freezing.py)."""
        from cogvideox_sat.training.freezing import disable_untrainable_params

        return disable_untrainable_params(self)

    def reinit(self, parent_model: nn.Module | None = None) -> None:
        """SAT calls this hook after loading; nothing to re-initialise (as officially)."""

    def frozen_module_prefixes(self) -> list[str]:
        """State-dict prefixes of the frozen helper modules: the VAE always, the conditioner
        when nothing in it trains. They come from their own files (3d-vae.pt, the T5 folder)."""
        prefixes = ["first_stage_model."]
        if not any(p.requires_grad for p in self.conditioner.parameters()):
            prefixes.append("conditioner.")
        return prefixes

    def checkpoint_state_dict(self, include_frozen_modules: bool = False) -> OrderedDict[str, torch.Tensor]:
        """The state dict to save: without the frozen VAE/T5 unless asked (the official engine
        saved them too, which bloated checkpoints and broke the official converter)."""
        state = self.state_dict()
        if include_frozen_modules:
            return state
        drop = tuple(self.frozen_module_prefixes())
        return OrderedDict((k, v) for k, v in state.items() if not k.startswith(drop))

    # ------------------------------------------------------------------ training step

    def get_input(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return batch[self.input_key].to(self.dtype)

    def add_noise_to_first_frame(self, image: torch.Tensor) -> torch.Tensor:
        """image + sigma * noise with log sigma ~ N(-3, 0.5) per sample (I2V conditioning)."""
        sigma = torch.normal(mean=-3.0, std=0.5, size=(image.shape[0],)).to(image.device)
        sigma = torch.exp(sigma).to(image.dtype)
        return image + torch.randn_like(image) * sigma[:, None, None, None, None]

    def condition_frame(self, batch: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        """The I2V condition frame [b, c, 1, h, w] before noise: frame 0 of the pixels x
        [b, c, t, h, w]; with `latent_input` (x holds latents) the batch's `first_frame`, which
        a latent cache built by tools/build_latent_cache.py provides."""
        if not self.latent_input:
            return x[:, :, 0:1]
        if "first_frame" not in batch:
            raise ValueError(
                "latent_input with noised_image_input: the batch has no `first_frame` (the clip's frame 0, "
                "which image-to-video noises and encodes every step); the latent cache was built without "
                "first frames or by an older version: rebuild the cache with tools/build_latent_cache.py "
                "for this I2V config"
            )
        return batch["first_frame"].to(device=x.device, dtype=self.dtype)

    def pad_latents(self, z: torch.Tensor) -> torch.Tensor:
        """[b, t, c, h, w] -> t rounded up to a multiple of the temporal patch by repeating the
        first latent frame in front (only with `pad_latent_frames`)."""
        pt = self.temporal_patch_size
        missing = (-z.shape[1]) % pt
        if not self.pad_latent_frames or missing == 0:
            return z
        return torch.cat([z[:, :1].expand(-1, missing, -1, -1, -1), z], dim=1)

    def image_condition(
        self, image_latent: torch.Tensor, z: torch.Tensor, dropout: float | None = None
    ) -> torch.Tensor:
        """I2V concat latents like z [b, t, c, h, w]: the first-frame latent [b, 1, c, h, w]
        followed by zeros (or repeated, `noised_image_all_concat`); all zeros with prob `dropout`.

        With a `dropout` (training) Python's `random` is drawn even at 0, as officially, so the
        Python random stream matches the official one.
        """
        if self.noised_image_all_concat:
            image = image_latent.repeat(1, z.shape[1], 1, 1, 1)
        else:
            image = torch.cat([image_latent, torch.zeros_like(z[:, 1:])], dim=1)
        if dropout is not None and random.random() < dropout:
            image = torch.zeros_like(image)
        return image

    def model_inputs(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Extra network inputs the loss passes through: the 1.5 I2V offset `ofs`."""
        if not self.uses_ofs:
            return {}
        return {"ofs": torch.full((batch_size,), OFS_VALUE, device=device)}

    def shared_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training/eval step on a batch of clips: returns (mean loss, {"loss": ...})."""
        # 1. Clip frames [b, t, c, h, w] -> VAE layout [b, c, t, h, w]
        x = self.get_input(batch).permute(0, 2, 1, 3, 4).contiguous()
        # 2. I2V: the first frame, lightly noised, encoded on its own (cached pixels with latent_input)
        if self.noised_image_input:
            image_latent = self.encode_first_stage(self.add_noise_to_first_frame(self.condition_frame(batch, x)), batch)
        # 3. Latents [b, t', c', h', w'] (scaled), padded for a temporal patch of 2 if asked
        z = self.encode_first_stage(x, batch).permute(0, 2, 1, 3, 4).contiguous()
        z = self.pad_latents(z)
        if self.noised_image_input:
            image_latent = image_latent.permute(0, 2, 1, 3, 4).contiguous()
            batch["concat_images"] = self.image_condition(image_latent, z, self.noised_image_dropout)
        # 4. Diffusion loss
        return self(z, batch)

    def forward(self, x: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Diffusion loss on latents x [b, t, c, h, w]: (mean loss, {"loss": mean loss})."""
        if self.loss_fn is None:
            raise ValueError("this engine has no loss_fn_config: it can sample but not train")
        # RNG order as the official loss: conditioner (text dropout), then timestep + noise.
        cond = self.conditioner(batch)
        draw = broadcast_noise_draw(self.loss_fn.draw(x))
        loss = self.loss_fn.compute(
            self.model, self.denoiser, cond, x, batch, draw, **self.model_inputs(x.shape[0], x.device)
        )
        loss_mean = loss.mean()
        return loss_mean, {"loss": loss_mean}

    # ------------------------------------------------------------------ VAE

    @torch.no_grad()
    def encode_first_stage(self, x: torch.Tensor, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """scale_factor * VAE latent of frames x [b, c, t, h, w] -> [b, c', t', h', w'].

        With `latent_input` the batch already holds unscaled VAE latents: a tensor with more
        than one entry on dim 2 is taken as such latents laid out [b, t', c', h', w'] (the
        official check and layout) and only permuted and scaled.
        """
        if self.latent_input and x.shape[2] > 1:
            return x.permute(0, 2, 1, 3, 4).contiguous() * self.scale_factor
        autocast = x.is_cuda and not self.disable_first_stage_autocast
        with torch.autocast(x.device.type, enabled=autocast):
            return first_stage.encode_first_stage(
                self.first_stage_model, x, self.scale_factor, self.en_and_decode_n_samples_a_time
            )

    @torch.no_grad()
    def decode_first_stage(self, z: torch.Tensor, **options: Any) -> torch.Tensor:
        """Frames [b, 3, T, H, W] from scaled latents z [b, c', t', h', w'].

        Official by default: latent frame 0 is dropped (the padding frame of 1.5 models) and
        4 frames per remaining latent are decoded in chunks. Options (see
        cogvideox_sat.vae.first_stage.decode_first_stage): drop_first_latent,
        first_frame_separate, chunk_sizes, tile. A CogVideoX 1.0 clip of t' latents decodes to
        its 1 + 4(t'-1) frames with drop_first_latent=False, first_frame_separate=True; a 1.5
        clip padded to 22 latents to 81 frames with first_frame_separate=True.
        """
        return first_stage.decode_first_stage(
            self.first_stage_model, z, self.scale_factor, self.en_and_decode_n_samples_a_time, **options
        )

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(
        self,
        cond: dict[str, torch.Tensor],
        uc: dict[str, torch.Tensor] | None = None,
        batch_size: int = 16,
        shape: Sequence[int] | None = None,
        prefix: torch.Tensor | None = None,
        concat_images: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
        num_steps: int | None = None,
    ) -> torch.Tensor:
        """Latents [batch_size, *shape] ([b, t, c, h, w], scaled) sampled from pure noise.

        The initial noise is drawn on the CPU generator (same numbers on any device, as
        officially) and broadcast across the model-parallel group. `prefix` replaces the first
        frames of that noise; `concat_images` is passed to the DiT (the official I2V path
        puts the image latents in cond/uc["concat"] instead); `ofs` defaults to 2.0 for
        models with an offset embedding.
        """
        if self.sampler is None:
            raise ValueError("this engine has no sampler_config")
        if shape is None:
            raise ValueError("sample() needs the latent shape (t, c, h, w)")
        device = self._device()
        randn = torch.randn(batch_size, *shape).to(torch.float32).to(device)
        if prefix is not None:
            randn = torch.cat([prefix, randn[:, prefix.shape[1] :]], dim=1)
        distributed.broadcast_from_model_parallel_source([randn])
        if ofs is None and self.uses_ofs:
            ofs = torch.tensor([OFS_VALUE], device=device)

        extra = {} if concat_images is None else {"concat_images": concat_images}

        def denoiser(x: torch.Tensor, sigma: torch.Tensor, c: dict, **model_inputs: Any) -> torch.Tensor:
            return self.denoiser(self.model, x, sigma, c, **extra, **model_inputs)

        samples = self.sampler(
            denoiser, randn, cond, uc=uc, num_steps=num_steps, scale=None, scale_emb=None, ofs=ofs
        )
        return samples.to(self.dtype)

    def log_video(
        self,
        batch: dict[str, Any],
        N: int = 8,
        ucg_keys: Sequence[str] | None = None,
        only_log_video_latents: bool = False,
        decode_options: Mapping[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sample videos for the batch's prompts as the official eval does (official surface;
        the code is sampling/video_log.py)."""
        from cogvideox_sat.sampling.video_log import log_video

        return log_video(self, batch, N, ucg_keys, only_log_video_latents, decode_options)
