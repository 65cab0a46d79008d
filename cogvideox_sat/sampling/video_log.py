"""Validation videos as the official eval logs them: condition on a batch's prompts (and first
frames, I2V), sample, decode. The engine exposes it as `engine.log_video` (official surface)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


@torch.no_grad()
def log_video(
    engine: Any,
    batch: dict[str, Any],
    N: int = 8,
    ucg_keys: Sequence[str] | None = None,
    only_log_video_latents: bool = False,
    decode_options: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Sample videos for the batch's prompts (and first frames, I2V) as the official eval
    does: {"inputs", "reconstructions", "samples"} as [b, t, c, h, w] float32, or
    {"inputs", "latents"} ([b, c, t, h, w], unscaled) with `only_log_video_latents`.
    Conditioning text is not rendered into images (the training loop saves the prompts)."""
    keys = [e.input_key for e in engine.conditioner.embedders]
    if ucg_keys:
        missing = [k for k in ucg_keys if k not in keys]
        if missing:
            raise ValueError(f"ucg_keys {missing} are not conditioner input keys {keys}")
    else:
        ucg_keys = keys
    decode_options = dict(decode_options or {})
    log: dict[str, torch.Tensor] = {}

    # 1. Conditions with classifier-free dropout off; zeros for the unconditional side
    x = engine.get_input(batch)
    c, uc = engine.conditioner.get_unconditional_conditioning(
        batch, force_uc_zero_embeddings=list(ucg_keys) if len(engine.conditioner.embedders) > 0 else []
    )
    N = min(x.shape[0], N)
    x = x.to(engine._device())[:N]
    if not engine.latent_input:
        log["inputs"] = x.to(torch.float32)
    # 2. Latents of the clips (and their reconstructions)
    x = x.permute(0, 2, 1, 3, 4).contiguous()
    z = engine.encode_first_stage(x, batch)
    if not only_log_video_latents:
        recon = engine.decode_first_stage(z, **decode_options).to(torch.float32)
        log["reconstructions"] = recon.permute(0, 2, 1, 3, 4).contiguous()
    z = engine.pad_latents(z.permute(0, 2, 1, 3, 4).contiguous())
    for k in c:
        if isinstance(c[k], torch.Tensor):
            c[k], uc[k] = c[k][:N].to(engine._device()), uc[k][:N].to(engine._device())
    # 3. I2V: the noised first frame's latent as concat condition (both CFG halves)
    if engine.noised_image_input:
        image = engine.encode_first_stage(engine.add_noise_to_first_frame(engine.condition_frame(batch, x)[:N]), batch)
        image = engine.image_condition(image.permute(0, 2, 1, 3, 4).contiguous(), z)
        c["concat"] = image
        uc["concat"] = image
    # 4. Sample and decode
    samples = engine.sample(c, uc=uc, batch_size=N, shape=z.shape[1:])  # [b, t, c, h, w]
    samples = samples.permute(0, 2, 1, 3, 4).contiguous()
    if only_log_video_latents:
        log["latents"] = samples / engine.scale_factor
    else:
        frames = engine.decode_first_stage(samples, **decode_options).to(torch.float32)
        log["samples"] = frames.permute(0, 2, 1, 3, 4).contiguous()
    return log
