"""3D causal VAE of CogVideoX (official `vae_modules`), loading the official 3d-vae.pt.

Built from the official `first_stage_config` (official target names resolve here):

    vae = instantiate_from_config(first_stage_config)          # ckpt_path loaded strictly
    z = vae.encode(x)                  # x (B, 3, 1+4k, H, W) in [-1, 1] -> (B, 16, 1+k, H/8, W/8)
    q = vae.encode_distribution(x)     # q.mode() (= mean), q.sample(generator)
    frames = vae.decode(z)             # official surface: cp_size 1 -> 4 frames per latent

Engine helpers (official numbers by default) live in `first_stage.py`:
`encode_first_stage(vae, x, scale_factor)` and `decode_first_stage(vae, z, scale_factor)`;
streaming and tiling in `chunking.py` / `tiling.py`; context parallelism through
`cogvideox_sat.distributed` and `cp_ops.py`.
"""

from cogvideox_sat.vae.autoencoder import StreamState, VideoAutoencoderInferenceWrapper
from cogvideox_sat.vae.decoder import ContextParallelDecoder3D
from cogvideox_sat.vae.encoder import ContextParallelEncoder3D
from cogvideox_sat.vae.regularizer import DiagonalGaussianDistribution, DiagonalGaussianRegularizer
from cogvideox_sat.vae.time_context import TimeContext

__all__ = [
    "VideoAutoencoderInferenceWrapper",
    "ContextParallelEncoder3D",
    "ContextParallelDecoder3D",
    "DiagonalGaussianRegularizer",
    "DiagonalGaussianDistribution",
    "TimeContext",
    "StreamState",
]
