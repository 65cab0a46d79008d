"""What validation rules read: the merged sections, the typed args, and derived model facts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from cogvideox_sat.arguments import RunArgs
from cogvideox_sat.config.loading import LoadedConfig
from cogvideox_sat.config.targets import TargetBlock
from cogvideox_sat.registry import canonical_target

RunKind = Literal["train", "sample"]

VAE_TIME_COMPRESSION = 4
VAE_SPACE_COMPRESSION = 8


@dataclass
class RunContext:
    loaded: LoadedConfig
    kind: RunKind
    args: Optional[RunArgs]  # None when the args section itself is invalid
    cli_keys: frozenset[str] = frozenset()  # args keys given on the command line
    blocks: list[TargetBlock] = field(default_factory=list)

    @property
    def model(self) -> dict[str, Any]:
        return self.loaded.section("model")

    @property
    def data(self) -> dict[str, Any]:
        return self.loaded.section("data")

    @property
    def deepspeed(self) -> dict[str, Any]:
        return self.loaded.section("deepspeed")

    def file_of(self, key: str) -> str:
        if key.startswith("args.") and key.split(".")[1] in self.cli_keys:
            return "<command line>"
        return self.loaded.file_of(key)

    def args_set(self, name: str) -> bool:
        """Whether `args.<name>` was given explicitly (YAML or command line), not defaulted."""
        return self.args is not None and name in self.args.model_fields_set

    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", "1"))

    # ---- model facts -------------------------------------------------------------------
    @property
    def network(self) -> dict[str, Any]:
        return (self.model.get("network_config") or {}).get("params") or {}

    def block(self, official_or_ours: str) -> Optional[TargetBlock]:
        """The first block whose target resolves to the given class name (official names ok)."""
        wanted = canonical_target(official_or_ours)
        for b in self.blocks:
            if canonical_target(b.target) == wanted:
                return b
        return None

    def blocks_of(self, class_name: str) -> list[TargetBlock]:
        return [b for b in self.blocks if canonical_target(b.target).rsplit(".", 1)[-1] == class_name]

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """(t, h, w); the official YAMLs give an int p for (1, p, p)."""
        p = self.network.get("patch_size", 2)
        if isinstance(p, int):
            return (1, p, p)
        p = tuple(int(v) for v in p)
        return p if len(p) == 3 else (1, *p)

    @property
    def pos_embed_kind(self) -> str:
        """'sincos' (2B), 'rope' (5B, 1.5) or '' when unknown."""
        modules = self.network.get("modules") or {}
        target = str((modules.get("pos_embed_config") or {}).get("target", ""))
        name = target.rsplit(".", 1)[-1]
        return {"Basic3DPositionEmbeddingMixin": "sincos", "Rotary3DPositionEmbeddingMixin": "rope"}.get(name, "")

    @property
    def has_fixed_position_table(self) -> bool:
        """Sincos (2B) and learnable (5B-I2V) tables have a maximum size; RoPE has none."""
        modules = self.network.get("modules") or {}
        params = (modules.get("pos_embed_config") or {}).get("params") or {}
        return self.pos_embed_kind == "sincos" or bool(params.get("learnable_pos_embed"))

    # ---- precision ---------------------------------------------------------------------
    def deepspeed_flag(self, name: Literal["fp16", "bf16"]) -> Optional[bool]:
        section = self.deepspeed.get(name)
        if not isinstance(section, Mapping) or "enabled" not in section:
            return None
        return bool(section["enabled"])

    def precision(self, name: Literal["fp16", "bf16"]) -> bool:
        """The effective flag: an explicit args value, else DeepSpeed's, else the default."""
        if self.args is not None and self.args_set(name):
            return bool(getattr(self.args, name))
        ds = self.deepspeed_flag(name) if self.kind == "train" else None
        return bool(ds) if ds is not None else False

    # ---- frame / size of the run -------------------------------------------------------
    def latent_frames(self) -> Optional[int]:
        """Latent frames the transformer sees (before any padding)."""
        if self.kind == "sample":
            return self.args.sampling_num_frames if self.args else None
        frames = self.train_frames()
        return None if frames is None else (frames - 1) // VAE_TIME_COMPRESSION + 1

    def train_frames(self) -> Optional[int]:
        value = (self.data.get("params") or {}).get("max_num_frames")
        return int(value) if isinstance(value, (int, float)) else None

    def image_size(self) -> tuple[Optional[str], Optional[list[int]]]:
        """(key path, [height, width]) of the run's video size."""
        if self.kind == "sample":
            size = self.args.sampling_image_size if self.args else None
            return "args.sampling_image_size", size
        size = (self.data.get("params") or {}).get("video_size")
        return "data.params.video_size", list(size) if isinstance(size, (list, tuple)) else None
