"""Check every `target`/`params` block of a config against the constructor it names.

Each block's target must resolve (through the official alias table and the allow-list), and each
of its params must be a parameter of that constructor: a misspelt `shift_scal` fails here, with
the closest valid names, instead of crashing (or being ignored) after minutes of model loading.
Nothing is instantiated.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cogvideox_sat.config.problems import Problem, closest
from cogvideox_sat.registry import TargetError, resolve_target

_BLOCK_KEYS = frozenset({"target", "params"})


def _extra_block_keys(holder: str) -> frozenset[str]:
    """Keys a block may carry besides target/params, by the list that holds it: the conditioner
    reads per-embedder settings (ucg_rate, input_key, ...) from its `emb_models` entries."""
    if holder == "emb_models":
        from cogvideox_sat.conditioner import EMBEDDER_BLOCK_KEYS

        return frozenset(EMBEDDER_BLOCK_KEYS) - _BLOCK_KEYS
    return frozenset()


@dataclass(frozen=True)
class TargetBlock:
    """A `{target, params}` block found at `path` (e.g. `model.network_config`)."""

    path: str
    target: str
    params: Mapping[str, Any]
    extra_keys: frozenset[str]
    holder: str = ""  # the key of the list holding this block, e.g. "emb_models"
    cls: Any = None  # the resolved class, once checked


def find_blocks(node: Any, path: str, holder: str = "") -> Iterator[TargetBlock]:
    """Every block with a `target` key below `node`, parents before children."""
    if isinstance(node, Mapping):
        if "target" in node:
            extra = frozenset(node) - _BLOCK_KEYS
            params = node.get("params") or {}
            yield TargetBlock(path, str(node["target"]), params, extra, holder)
            yield from find_blocks(params, f"{path}.params")
            for key in extra:
                yield from find_blocks(node[key], f"{path}.{key}", key)
        else:
            for key, value in node.items():
                yield from find_blocks(value, f"{path}.{key}", str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from find_blocks(value, f"{path}.{i}", holder)


def constructor_params(cls: Any) -> tuple[set[str], bool]:
    """The keyword names `cls(...)` accepts, and whether it also takes **kwargs."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return set(), True
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    open_ended = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, open_ended


def check_blocks(root: Any, root_path: str, file_of: Callable[[str], str]) -> tuple[list[TargetBlock], list[Problem]]:
    """Resolve and check every block under `root`; returns the resolved blocks and problems."""
    resolved: list[TargetBlock] = []
    problems: list[Problem] = []
    for block in find_blocks(root, root_path):
        where = file_of(block.path)
        allowed_extra = _extra_block_keys(block.holder)
        for key in sorted(block.extra_keys - allowed_extra):
            problems.append(
                Problem(f"{block.path}.{key}", "unknown key in a target block", f"{closest(key, _BLOCK_KEYS | allowed_extra)}", where)
            )
        try:
            cls = resolve_target(block.target)
        except TargetError as err:
            problems.append(Problem(f"{block.path}.target", str(err), "", where))
            continue
        if not isinstance(block.params, Mapping):
            problems.append(Problem(f"{block.path}.params", "params must be a mapping", "", where))
            continue
        accepted, open_ended = constructor_params(cls)
        if not open_ended:
            for key in block.params:
                if key not in accepted:
                    problems.append(
                        Problem(
                            f"{block.path}.params.{key}",
                            f"{block.target} has no parameter '{key}'",
                            f"remove it; {closest(str(key), accepted)}",
                            file_of(f"{block.path}.params.{key}"),
                        )
                    )
        resolved.append(dataclasses.replace(block, cls=cls))
    return resolved, problems
