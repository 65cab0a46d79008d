"""The tiny demo engine under DeepSpeed ZeRO, built as `train(args)` builds it, with pinned draws.

Each sample's timestep and noise come from a seed derived from the sample's own bytes, so a
sample gets the same draw whichever rank, batch or process count it lands in; with that, runs
on different process counts are comparable number for number.
"""

from __future__ import annotations

import argparse
import zlib
from typing import Any

import torch
from omegaconf import OmegaConf

from tests.conftest import REPO

LATENT = (3, 4, 8, 12)  # (t, c, h, w) of a 9x64x96 clip in the demo model


def model_config(name: str, t5_dir: str) -> Any:
    cfg = OmegaConf.load(REPO / "configs" / "demo" / f"{name}.yaml").model
    t5 = cfg.conditioner_config.params.emb_models[0]
    t5.params.model_dir = t5_dir
    t5.ucg_rate = 0.0  # text dropout draws from the global RNG; the tests pin every draw
    return cfg


def ds_config(stage: int, micro: int) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "demo" / "sft_tiny.yaml").deepspeed)
    cfg["train_micro_batch_size_per_gpu"] = micro
    cfg["zero_optimization"] = {"stage": stage}
    return cfg


def samples(n: int) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(123)
    words = ["red", "blue", "green", "bar", "square", "moving", "left", "up"]
    return [
        {"latents": torch.randn(*LATENT, generator=gen), "txt": f"a {words[i % 8]} {words[(3 * i + 1) % 8]} sample {i}"}
        for i in range(n)
    ]


def pin_draw_per_sample(loss_fn: Any) -> None:
    """Replace `loss_fn.draw` by the same draw made sample by sample from the sample's bytes."""
    draw = loss_fn.draw

    def per_sample(x: torch.Tensor) -> Any:
        draws = []
        for row in x:
            with torch.random.fork_rng():
                torch.manual_seed(zlib.crc32(row.detach().float().numpy().tobytes()))
                draws.append(draw(row[None]))
        return type(draws[0])(*(torch.cat(parts) for parts in zip(*(d.tensors() for d in draws))))

    loss_fn.draw = per_sample


def build_engine(model: str, stage: int, t5_dir: str) -> torch.nn.Module:
    """The engine as `train(args)` prepares it for DeepSpeed (same init on every process)."""
    from cogvideox_sat.engine import SATVideoDiffusionEngine
    from cogvideox_sat.training.main import exclude_frozen_modules_from_state_dict, hide_frozen_modules_from_zero3

    torch.manual_seed(0)
    engine = SATVideoDiffusionEngine(argparse.Namespace(model_config=model_config(model, t5_dir), fp16=False, bf16=False, device="cpu"))
    engine.disable_untrainable_params()
    exclude_frozen_modules_from_state_dict(engine)
    pin_draw_per_sample(engine.loss_fn)
    if stage == 3:
        hide_frozen_modules_from_zero3(engine, torch.device("cpu"), torch.float32)
    return engine


def initialize(engine: torch.nn.Module, config: dict[str, Any]) -> Any:
    import deepspeed

    from cogvideox_sat.training.main import param_groups

    ds_engine, *_ = deepspeed.initialize(model=engine, model_parameters=param_groups(engine), config=config, dist_init_required=False)
    return ds_engine


def step(ds_engine: Any, picked: list[dict[str, Any]]) -> tuple[float, Any]:
    """Forward and backward on `picked` samples (the step itself is the caller's)."""
    batch = {"latents": torch.stack([s["latents"] for s in picked]), "txt": [s["txt"] for s in picked]}
    loss, _ = ds_engine.module(batch["latents"], batch)
    ds_engine.backward(loss)
    return float(loss.detach()), loss


def trainable(ds_engine: Any) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in ds_engine.module.named_parameters() if p.requires_grad]


def optimizer_view(ds_engine: Any) -> dict[str, dict[str, torch.Tensor]]:
    """Whole fp32 weights and Adam moments of every trainable tensor (any ZeRO stage)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    view: dict[str, dict[str, torch.Tensor]] = {"weights": {}, "exp_avg": {}, "exp_avg_sq": {}}
    for name, p in trainable(ds_engine):
        view["weights"][name] = safe_get_full_fp32_param(p).clone()
        for key in ("exp_avg", "exp_avg_sq"):
            view[key][name] = safe_get_full_optimizer_state(p, key).clone()
    return view
