"""cogvideox-sat: fine-tune CogVideoX text-to-video and image-to-video models, SAT-style.

Importing the package is cheap and silent: heavy modules (torch models, SwissArmyTransformer,
DeepSpeed) load only when a config names them.
"""

from cogvideox_sat.registry import instantiate_from_config, resolve_target

__version__ = "0.1.0"
__all__ = ["instantiate_from_config", "resolve_target", "__version__"]
