"""Config loading (`--base` files merged with OmegaConf) and validation before anything loads."""

from cogvideox_sat.config.loading import SECTIONS, ConfigError, LoadedConfig, load_configs
from cogvideox_sat.config.problems import ConfigValidationError, Problem
from cogvideox_sat.config.run import ValidatedRun, to_namespace, validate_run

__all__ = [
    "SECTIONS",
    "ConfigError",
    "ConfigValidationError",
    "LoadedConfig",
    "Problem",
    "ValidatedRun",
    "load_configs",
    "to_namespace",
    "validate_run",
]
