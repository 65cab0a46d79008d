"""Load `--base a.yaml b.yaml ...` and merge them with OmegaConf (later files win).

Besides the merged config we keep, for every key path, the file that set it last, so that a
validation error can say "configs/sft.yaml: args.lr_decay_stlye" instead of just a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

SECTIONS = ("model", "args", "deepspeed", "data")


class ConfigError(ValueError):
    """A config file cannot be read or merged."""


@dataclass
class LoadedConfig:
    """The merged `--base` files and where each key came from."""

    files: list[str]
    merged: DictConfig
    origin: dict[str, str] = field(default_factory=dict)

    def file_of(self, key_path: str) -> str:
        """The file that set `key_path` (or its closest parent); the last file if none did."""
        path = key_path
        while path:
            if path in self.origin:
                return self.origin[path]
            path = path.rpartition(".")[0]
        return self.files[-1] if self.files else "<command line>"

    def section(self, name: str) -> Any:
        """A plain-Python copy of one section (empty dict when absent)."""
        node = self.merged.get(name)
        return {} if node is None else OmegaConf.to_container(node, resolve=True)


def _key_paths(node: Any, prefix: str = "") -> Iterable[str]:
    """Every key path in a nested mapping; lists are leaves (OmegaConf replaces them whole)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _key_paths(value, path)


def load_yaml(path: str | Path) -> DictConfig:
    """One YAML file as a DictConfig, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (check the --base arguments)")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf errors carry the position
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if cfg is None or isinstance(cfg, ListConfig):
        raise ConfigError(
            f"{path}: a config file must be a mapping with sections {', '.join(SECTIONS)}"
        )
    return cfg


def load_configs(paths: Sequence[str | Path]) -> LoadedConfig:
    """Merge the files in order; later files override earlier ones key by key."""
    if not paths:
        raise ConfigError("no config given: pass --base model.yaml [sft.yaml|inference.yaml ...]")
    cfgs = [load_yaml(p) for p in paths]
    origin: dict[str, str] = {}
    for path, cfg in zip(paths, cfgs):
        plain = OmegaConf.to_container(cfg, resolve=False)
        for key in _key_paths(plain):
            origin[key] = str(path)
    try:
        merged = OmegaConf.merge(*cfgs)
    except Exception as err:
        raise ConfigError(f"cannot merge {', '.join(map(str, paths))}: {err}") from err
    return LoadedConfig(files=[str(p) for p in paths], merged=merged, origin=origin)
