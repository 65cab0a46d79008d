"""GeneralConditioner: runs the embedders on a batch and applies classifier-free dropout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cogvideox_sat.conditioner.embedder import AbstractEmbModel
from cogvideox_sat.registry import instantiate_from_config

# Keys of one `emb_models` entry besides target/params (the config validator imports this).
EMBEDDER_BLOCK_KEYS = frozenset(
    {"target", "params", "is_trainable", "ucg_rate", "input_key", "input_keys", "legacy_ucg_value"}
)


class GeneralConditioner(nn.Module):
    """Embeds the conditioning inputs of a batch into a dict of model conditions.

    Each embedder's output goes to a key chosen by its rank: 2D -> "vector", 3D -> "crossattn"
    (the T5 text states, [b, tokens, dim]), 4D/5D -> "concat"; outputs sharing a key are
    concatenated. During training an embedder with `ucg_rate` p zeroes each sample's embedding
    with probability p (classifier-free dropout; `legacy_ucg_value` replaces the raw input
    instead). `cor_embs`/`cor_p` drop several embedders jointly with the given probabilities.
    Frozen embedders (is_trainable false) run under no_grad and stay in eval mode.
    """

    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(
        self,
        emb_models: Sequence[Mapping[str, Any]],
        cor_embs: Sequence[int] | None = None,
        cor_p: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        embedders = [self._build_embedder(i, cfg) for i, cfg in enumerate(emb_models)]
        self.embedders = nn.ModuleList(embedders)
        self.cor_embs = list(cor_embs or [])
        self.cor_p = list(cor_p or [])
        if self.cor_embs and len(self.cor_p) != 2 ** len(self.cor_embs):
            raise ValueError(
                f"GeneralConditioner: cor_p needs 2**len(cor_embs) = {2 ** len(self.cor_embs)} "
                f"probabilities, got {len(self.cor_p)}"
            )

    @staticmethod
    def _build_embedder(index: int, cfg: Mapping[str, Any]) -> AbstractEmbModel:
        unknown = set(cfg) - EMBEDDER_BLOCK_KEYS
        if unknown:
            raise ValueError(
                f"emb_models[{index}]: unknown keys {sorted(unknown)}; valid: {sorted(EMBEDDER_BLOCK_KEYS)}"
            )
        embedder = instantiate_from_config(cfg)
        if not isinstance(embedder, AbstractEmbModel):
            raise TypeError(
                f"emb_models[{index}]: {type(embedder).__name__} must subclass "
                "cogvideox_sat.conditioner.embedder.AbstractEmbModel"
            )
        embedder.is_trainable = bool(cfg.get("is_trainable", False))
        embedder.ucg_rate = float(cfg.get("ucg_rate", 0.0))
        if "input_key" in cfg:
            embedder.input_key = cfg["input_key"]
        elif "input_keys" in cfg:
            embedder.input_keys = list(cfg["input_keys"])
        else:
            raise ValueError(f"emb_models[{index}]: needs 'input_key' or 'input_keys'")
        embedder.legacy_ucg_val = cfg.get("legacy_ucg_value", None)
        if embedder.legacy_ucg_val is not None:
            embedder.ucg_prng = np.random.RandomState()
        if not embedder.is_trainable:
            embedder.requires_grad_(False)
            embedder.eval()
        return embedder

    def train(self, mode: bool = True) -> GeneralConditioner:
        """Frozen embedders stay in eval mode (no dropout in T5) whatever the engine's mode."""
        super().train(mode)
        for embedder in self.embedders:
            if not embedder.is_trainable:
                embedder.eval()
        return self

    # --- classifier-free dropout of raw inputs (legacy_ucg_value) ----------------------------

    @staticmethod
    def _replace_inputs(embedder: AbstractEmbModel, batch: dict, drop: Sequence[bool]) -> None:
        values = batch[embedder.input_key]
        for i, dropped in enumerate(drop):
            if dropped:
                values[i] = embedder.legacy_ucg_val

    def _embed(
        self,
        embedder: AbstractEmbModel,
        batch: dict,
        output: dict[str, torch.Tensor],
        cond_or_not: np.ndarray | None,
        force_zero_embeddings: Sequence[str],
    ) -> None:
        # 1. Run the embedder (no graph for frozen ones), unless the batch carries its output
        #    precomputed (the latent cache stores T5 embeddings as `<input_key>_emb`).
        cached = batch.get(f"{embedder.input_key}_emb") if embedder.input_key is not None else None
        with torch.set_grad_enabled(embedder.is_trainable and torch.is_grad_enabled()):
            if cached is not None and not embedder.is_trainable:
                emb_out = cached
            elif embedder.input_key is not None:
                if embedder.legacy_ucg_val is not None:
                    n = len(batch[embedder.input_key])
                    if cond_or_not is None:
                        p = embedder.ucg_rate
                        drop = [bool(embedder.ucg_prng.choice(2, p=[1 - p, p])) for _ in range(n)]
                    else:
                        drop = [bool(c) for c in cond_or_not]
                    self._replace_inputs(embedder, batch, drop)
                emb_out = embedder(batch[embedder.input_key])
            else:
                emb_out = embedder(*[batch[k] for k in embedder.input_keys])
        if not isinstance(emb_out, (torch.Tensor, list, tuple)):
            raise TypeError(f"{type(embedder).__name__} returned {type(emb_out)}; expected tensors")
        outputs = list(emb_out) if isinstance(emb_out, (list, tuple)) else [emb_out]
        for emb in outputs:
            out_key = self.OUTPUT_DIM2KEYS[emb.dim()]
            # 2. Classifier-free dropout: zero whole samples' embeddings.
            if embedder.ucg_rate > 0.0 and embedder.legacy_ucg_val is None:
                if cond_or_not is None:
                    keep = torch.bernoulli((1.0 - embedder.ucg_rate) * torch.ones(emb.shape[0], device=emb.device))
                else:
                    keep = torch.tensor(1 - cond_or_not, dtype=emb.dtype, device=emb.device)
                emb = keep.view(-1, *([1] * (emb.dim() - 1))).to(emb.dtype) * emb
            # 3. Unconditional embedding requested for this input.
            if embedder.input_key is not None and embedder.input_key in force_zero_embeddings:
                emb = torch.zeros_like(emb)
            if out_key in output:
                output[out_key] = torch.cat((output[out_key], emb), self.KEY2CATDIM[out_key])
            else:
                output[out_key] = emb

    def forward(self, batch: dict, force_zero_embeddings: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Conditions for `batch`; embedders whose input_key is in `force_zero_embeddings`
        contribute zeros."""
        force_zero_embeddings = list(force_zero_embeddings or [])
        output: dict[str, torch.Tensor] = {}
        if self.cor_embs:
            batch_size = len(batch[next(iter(batch))])
            rand_idx = np.random.choice(len(self.cor_p), size=(batch_size,), p=self.cor_p)
            for emb_idx in self.cor_embs:
                cond_or_not = rand_idx % 2
                rand_idx //= 2
                self._embed(self.embedders[emb_idx], batch, output, cond_or_not, force_zero_embeddings)
        for i, embedder in enumerate(self.embedders):
            if i not in self.cor_embs:
                self._embed(embedder, batch, output, None, force_zero_embeddings)
        return output

    def get_unconditional_conditioning(
        self,
        batch_c: dict,
        batch_uc: dict | None = None,
        force_uc_zero_embeddings: Sequence[str] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(cond, uncond) for sampling, with classifier-free dropout switched off.

        The unconditional side embeds `batch_uc` (default: `batch_c`) and zeroes the
        embedders named in `force_uc_zero_embeddings` (CogVideoX: ["txt"], i.e. an all-zero
        text condition rather than the embedding of an empty prompt).
        """
        rates = [e.ucg_rate for e in self.embedders]
        cor_embs, cor_p = self.cor_embs, self.cor_p
        for embedder in self.embedders:
            embedder.ucg_rate = 0.0
        self.cor_embs, self.cor_p = [], []
        try:
            c = self(batch_c)
            uc = self(batch_c if batch_uc is None else batch_uc, force_uc_zero_embeddings)
        finally:
            for embedder, rate in zip(self.embedders, rates):
                embedder.ucg_rate = rate
            self.cor_embs, self.cor_p = cor_embs, cor_p
        return c, uc
