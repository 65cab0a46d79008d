"""3D causal VAE (context parallel) compatible with the official 3d-vae.pt."""

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
