"""Target resolution: `target`/`params` config blocks -> objects.

Official CogVideoX configs name their classes by module paths relative to the official
`sat/` folder (`dit_video_concat.DiffusionTransformer`, `sgm.modules....`). One alias table
maps each of those names to our class, so the official YAMLs load unchanged.

Resolution is restricted to an allow-list (our package, the official aliases, SAT's mixins,
`torch.nn`): a YAML downloaded from the internet must not be able to import and call
arbitrary code just by naming it. `allow_any_target()` lifts the restriction for one run
(the `--allow-any-target` flag).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

# official module -> (our module, class names). Grouped per module so the table stays readable;
# expanded into OFFICIAL_ALIASES below.
_OFFICIAL_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "dit_video_concat": (
        "cogvideox_sat.models",
        (
            "DiffusionTransformer",
            "Basic3DPositionEmbeddingMixin",
            "Rotary3DPositionEmbeddingMixin",
            "ImagePatchEmbeddingMixin",
            "AdaLNMixin",
            "FinalLayerMixin",
        ),
    ),
    "sat.model.finetune.lora2": ("cogvideox_sat.models", ("LoraMixin",)),
    "sgm.modules": ("cogvideox_sat.conditioner", ("GeneralConditioner",)),
    "sgm.modules.encoders.modules": (
        "cogvideox_sat.conditioner",
        ("GeneralConditioner", "FrozenT5Embedder"),
    ),
    "sgm.modules.diffusionmodules.denoiser": (
        "cogvideox_sat.diffusion.denoiser",
        ("DiscreteDenoiser",),
    ),
    "sgm.modules.diffusionmodules.denoiser_scaling": (
        "cogvideox_sat.diffusion.denoiser_scaling",
        ("VideoScaling",),
    ),
    "sgm.modules.diffusionmodules.denoiser_weighting": (
        "cogvideox_sat.diffusion.denoiser_weighting",
        ("EpsWeighting", "UnitWeighting"),
    ),
    "sgm.modules.diffusionmodules.discretizer": (
        "cogvideox_sat.diffusion.discretizer",
        ("ZeroSNRDDPMDiscretization",),
    ),
    "sgm.modules.diffusionmodules.sigma_sampling": (
        "cogvideox_sat.diffusion.sigma_sampling",
        ("DiscreteSampling",),
    ),
    "sgm.modules.diffusionmodules.loss": (
        "cogvideox_sat.diffusion.loss",
        ("VideoDiffusionLoss",),
    ),
    "sgm.modules.diffusionmodules.sampling": (
        "cogvideox_sat.diffusion.sampling",
        ("VPSDEDPMPP2MSampler", "VPODEDPMPP2MSampler", "VideoDDIMSampler"),
    ),
    "sgm.modules.diffusionmodules.guiders": (
        "cogvideox_sat.diffusion.guiders",
        ("VanillaCFG", "DynamicCFG", "IdentityGuider"),
    ),
    "sgm.modules.diffusionmodules.sampling_utils": (
        "cogvideox_sat.diffusion.guiders",
        ("NoDynamicThresholding",),
    ),
    "sgm.modules.diffusionmodules.wrappers": (
        "cogvideox_sat.diffusion.wrappers",
        ("OpenAIWrapper",),
    ),
    "vae_modules.autoencoder": (
        "cogvideox_sat.vae",
        ("VideoAutoencoderInferenceWrapper",),
    ),
    "vae_modules.cp_enc_dec": (
        "cogvideox_sat.vae",
        ("ContextParallelEncoder3D", "ContextParallelDecoder3D"),
    ),
    "vae_modules.regularizers": (
        "cogvideox_sat.vae",
        ("DiagonalGaussianRegularizer",),
    ),
    "data_video": ("cogvideox_sat.data", ("SFTDataset", "VideoDataset")),
}

OFFICIAL_ALIASES: dict[str, str] = {
    f"{official}.{name}": f"{ours}.{name}"
    for official, (ours, names) in _OFFICIAL_MODULES.items()
    for name in names
}

# Module prefixes whose classes may be named directly in a config.
ALLOWED_PREFIXES: tuple[str, ...] = (
    "cogvideox_sat.",
    "torch.nn.",
    "sat.model.mixins.",
    "sat.model.finetune.",
)

_OFFICIAL_ROOTS = tuple(sorted({k.split(".")[0] + "." for k in _OFFICIAL_MODULES}))

_allow_any = False


class TargetError(ValueError):
    """A config names a target that cannot or may not be resolved."""


@contextlib.contextmanager
def allow_any_target(enabled: bool = True) -> Iterator[None]:
    """Within this block, any importable target resolves (the `--allow-any-target` flag)."""
    global _allow_any
    previous, _allow_any = _allow_any, enabled
    try:
        yield
    finally:
        _allow_any = previous


def canonical_target(target: str) -> str:
    """The dotted path we import for `target`: official names go through the alias table."""
    target = target.strip()
    if target in OFFICIAL_ALIASES:
        return OFFICIAL_ALIASES[target]
    if target.startswith(_OFFICIAL_ROOTS) and not target.startswith(ALLOWED_PREFIXES):
        close = difflib.get_close_matches(target, list(OFFICIAL_ALIASES), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise TargetError(
            f"target '{target}' is an official CogVideoX name with no equivalent in "
            f"cogvideox_sat.{hint} Supported official targets: see cogvideox_sat.registry.OFFICIAL_ALIASES."
        )
    return target


def is_allowed(target: str) -> bool:
    """Whether `target` may be imported without `--allow-any-target`."""
    return canonical_target(target).startswith(ALLOWED_PREFIXES)


def resolve_target(target: str) -> Any:
    """Import and return the object a config's `target` names."""
    if not isinstance(target, str) or "." not in target:
        raise TargetError(f"target must be a dotted 'module.Name' string, got {target!r}")
    path = canonical_target(target)
    if not _allow_any and not path.startswith(ALLOWED_PREFIXES):
        raise TargetError(
            f"target '{target}' is outside the allow-list ({', '.join(ALLOWED_PREFIXES)} and the "
            "official CogVideoX names). A config must not import arbitrary code by default; if you "
            "trust this config, pass --allow-any-target."
        )
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise TargetError(f"target '{target}': cannot import module '{module_name}' ({err})") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise TargetError(f"target '{target}': module '{module_name}' has no '{attr}'.{hint}") from None


def instantiate_from_config(config: Mapping[str, Any], **extra: Any) -> Any:
    """Build `target(**params, **extra)` from a `{target, params}` block.

    `params` may be an OmegaConf node; nested `*_config` blocks stay configs, each class
    builds its own children (as the official code does).
    """
    if config is None:
        raise TargetError("expected a config block with a 'target' key, got nothing")
    if "target" not in config:
        raise TargetError(f"config block has no 'target' key (keys: {sorted(config)})")
    cls = resolve_target(config["target"])
    params = dict(config.get("params", None) or {})
    return cls(**params, **extra)
