"""Checkpoint loading and key maps shared with tools/.

- `load_sat_checkpoint`: released SAT layout (`latest` + `<iter>/mp_rank_00_model_states.pt`).
- `load_state_dict_with_report` / `LoadReport` / `CheckpointMismatchError`: strict loading
  that lists every missing, unexpected and mis-shaped key.
- `adapt_dit_state_dict`: conv-layout patch embeddings, base weights into LoRA layers.
- `sat_dit_to_diffusers`: SAT DiT keys -> diffusers CogVideoXTransformer3DModel keys (and back:
  `diffusers_keys.diffusers_dit_to_sat`, the same table).
- `sat_vae_to_diffusers`: SAT VAE keys -> diffusers AutoencoderKLCogVideoX keys (and back:
  `diffusers_vae_keys.diffusers_vae_to_sat`).

Used by tools/convert_weight_*.py and tools/export_sat_lora_weight.py (import directly):
`diffusers_configs` (diffusers configs from a SAT model section), `dit_variant` (which variant a
checkpoint is), `diffusers_export` (components and pipeline folders), `lora_state` (alpha,
merge), `zero_checkpoint` (ZeRO consolidation), `sat_writer` (SAT layout output),
`diffusers_import` (diffusers folders and LoRA files read into SAT keys: the way in).
"""

from .diffusers_keys import sat_dit_to_diffusers
from .diffusers_vae_keys import sat_vae_to_diffusers
from .dit_keys import adapt_dit_state_dict
from .load_report import CheckpointMismatchError, LoadReport, load_state_dict_with_report
from .sat_checkpoint import (
    DIT_PREFIX,
    EMA_SUFFIX,
    MODEL_STATES,
    ema_checkpoint_folder,
    load_sat_checkpoint,
    read_module_state,
    resolve_checkpoint_file,
    split_prefix,
)

__all__ = [
    "CheckpointMismatchError",
    "DIT_PREFIX",
    "EMA_SUFFIX",
    "LoadReport",
    "MODEL_STATES",
    "adapt_dit_state_dict",
    "ema_checkpoint_folder",
    "load_sat_checkpoint",
    "load_state_dict_with_report",
    "read_module_state",
    "resolve_checkpoint_file",
    "sat_dit_to_diffusers",
    "sat_vae_to_diffusers",
    "split_prefix",
]
