"""What the latent-cache builder needs from the models, and fingerprints of their weights.

The builder does not know about the engine: it takes two callables and a fingerprint
(`CacheEncoders`). tools/build_latent_cache.py wires the real VAE and T5 from the `--base`
configs; tests pass tiny deterministic stand-ins.

`model_fingerprint(model_config)` fingerprints the weights a model config names, from the
files themselves (VAE checkpoint, T5 folder; digests remembered by size and mtime), plus the
parameters that change what the encoders output. Training computes the same from its config
to check that a cache matches its models, without loading either model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from cogvideox_sat.data.hashing import HashMemo, digest_of
from cogvideox_sat.data.latent_cache import LatentCache

LATENT_KINDS = ("latent", "moments")

# Conditioner/VAE params that do not change an encoder's output (dropout, training flags,
# devices): left out of the fingerprint so changing them keeps the cache.
_IRRELEVANT = frozenset({"ucg_rate", "legacy_ucg_value", "is_trainable", "device", "freeze", "cache_dir", "cp_size", "loss_config"})


@dataclass(frozen=True)
class CacheEncoders:
    """The two encoders of a cache build and the fingerprint of their weights.

    encode_video: float (B, T, C, H, W) in [-1, 1] -> unscaled VAE output (B, C', T', H', W'):
        the latent (`latent_kind` "latent") or the posterior moments cat([mean, logvar], dim 1)
        ("moments"; items then carry a fresh draw mean + std * noise each time, as the
        sampling regularizer of the official VAE gives).
    encode_text: B captions -> (B, L, D) text embeddings (T5 output, before any dropout).
    """

    encode_video: Callable[[torch.Tensor], torch.Tensor]
    encode_text: Callable[[list[str]], torch.Tensor]
    fingerprint: str
    latent_kind: str = "latent"
    description: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.latent_kind not in LATENT_KINDS:
            raise ValueError(f"latent_kind must be one of {LATENT_KINDS}, got {self.latent_kind!r}")


def path_digest(path: str, hashes: HashMemo) -> str:
    """Content digest of a file, or of every file below a folder (names and contents)."""
    if os.path.isfile(path):
        return hashes.digest(path)
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            files.append((os.path.relpath(full, path), hashes.digest(full)))
    return digest_of(files)


def model_fingerprint(
    model_config: Mapping[str, Any], hashes: HashMemo | None = None, first_stage: torch.nn.Module | None = None
) -> str:
    """Fingerprint of the VAE (`first_stage_config`) and text encoder (`conditioner_config`)
    a model config builds: weights by file content, parameters by value, paths not at all.

    A VAE without `ckpt_path` has random weights that no file describes: pass the built module
    as `first_stage` and its tensors are fingerprinted by value instead.
    """
    hashes = hashes or HashMemo()

    def canonical(node: Any, key: str = "") -> Any:
        if isinstance(node, Mapping):
            return {str(k): canonical(v, str(k)) for k, v in node.items() if str(k) not in _IRRELEVANT}
        if isinstance(node, str):
            if key.endswith(("_path", "_dir")):  # ckpt_path, model_dir: the content, not the name
                return {"content": path_digest(node, hashes) if os.path.exists(node) else "missing"}
            return node
        if hasattr(node, "__iter__"):  # lists, tuples, OmegaConf ListConfig
            return [canonical(v, key) for v in node]
        return node

    cfg = {k: canonical(model_config.get(k)) for k in ("first_stage_config", "conditioner_config")}
    vae_params = (model_config.get("first_stage_config") or {}).get("params") or {}
    if not vae_params.get("ckpt_path"):
        if first_stage is None:
            raise ValueError(
                "first_stage_config has no ckpt_path (random VAE weights): pass the built VAE as "
                "first_stage= so its weights can be fingerprinted"
            )
        cfg["first_stage_tensors"] = tensor_fingerprint(first_stage)
    return digest_of(cfg)


def check_cache_matches_model(
    cache: LatentCache, model_config: Mapping[str, Any], first_stage: torch.nn.Module | None = None
) -> None:
    """Raise StaleCacheError unless `cache` was built with the VAE and T5 of `model_config`.

    Training calls this once at start when its dataset reads a latent cache.
    """
    cache.check_fingerprint(model_fingerprint(model_config, cache.hashes, first_stage))


def tensor_fingerprint(*modules: torch.nn.Module) -> str:
    """Fingerprint of modules' parameters and buffers by value (for weights not from files)."""
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
