"""Zero-terminal-SNR DDPM noise schedule (CogVideoX's `ZeroSNRDDPMDiscretization`).

The schedule is expressed as sqrt(alpha_cumprod) ("alpha" below), not as sigmas: VideoScaling,
the loss and the samplers all work with it directly. Tables are computed in float64 numpy and
cast to float32 before the zero-SNR rescale, exactly as the official code does, so the values
match its checkpoints' training schedule bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch


def roughly_equally_spaced_steps(num_substeps: int, max_step: int) -> np.ndarray:
    """`num_substeps` DDPM timesteps in ascending order, the last one being `max_step - 1`."""
    return np.linspace(max_step - 1, 0, num_substeps, endpoint=False).astype(int)[::-1]


def linear_beta_schedule(num_timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
    """The "scaled linear" DDPM betas (linear in sqrt(beta)), float64."""
    sqrt_betas = torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64)
    return (sqrt_betas**2).numpy()


class ZeroSNRDDPMDiscretization:
    """DDPM schedule with a log-SNR shift and a rescale to exactly zero SNR at the last step.

    `shift_scale` s shifts every step's SNR by 1/s (logSNR - log s): alpha_cumprod ->
    a / (s + (1 - s) a). With `post_shift` the shift is applied after the zero-SNR rescale
    instead of before; `keep_start` adjusts `linear_start` so the first step keeps its SNR.

    Calling the object returns a table for `n` steps:
    `disc(n, do_append_zero=True, device="cpu", flip=False, return_idx=False)`.
    Unflipped, the table runs from the noisiest step (alpha = 0) to the cleanest; flipped
    (as the denoiser and the index sampler use it), entry i belongs to DDPM timestep i.
    """

    def __init__(
        self,
        linear_start: float = 0.00085,
        linear_end: float = 0.0120,
        num_timesteps: int = 1000,
        shift_scale: float = 1.0,
        keep_start: bool = False,
        post_shift: bool = False,
    ) -> None:
        if keep_start and not post_shift:
            linear_start = linear_start / (shift_scale + (1 - shift_scale) * linear_start)
        self.num_timesteps = num_timesteps
        self.shift_scale = shift_scale
        self.post_shift = post_shift
        alphas = 1.0 - linear_beta_schedule(num_timesteps, linear_start, linear_end)
        alphas_cumprod = np.cumprod(alphas, axis=0)
        if not post_shift:
            alphas_cumprod = alphas_cumprod / (shift_scale + (1 - shift_scale) * alphas_cumprod)
        # float64, indexed by DDPM timestep (0 = cleanest).
        self.alphas_cumprod = alphas_cumprod

    def get_sigmas(
        self, n: int, device: torch.device | str = "cpu", return_idx: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, np.ndarray]:
        """sqrt(alpha_cumprod) for `n` steps, noisiest first (and the DDPM timesteps, ascending).

        For n < num_timesteps the zero-SNR rescale uses the subset's own first and last
        values, so an n-step table is not a plain subsample of the full one (official quirk,
        kept: the released models were sampled this way).
        """
        if n < self.num_timesteps:
            timesteps = roughly_equally_spaced_steps(n, self.num_timesteps)
            alphas_cumprod = self.alphas_cumprod[timesteps]
        elif n == self.num_timesteps:
            timesteps = np.arange(n)
            alphas_cumprod = self.alphas_cumprod
        else:
            raise ValueError(f"n={n} steps exceeds the schedule's {self.num_timesteps} timesteps")

        # The rescale runs in float32, as the official code does; keep the op order.
        alpha = torch.tensor(alphas_cumprod, dtype=torch.float32, device=device).sqrt()
        alpha_0 = alpha[0].clone()
        alpha_T = alpha[-1].clone()
        alpha -= alpha_T
        alpha *= alpha_0 / (alpha_0 - alpha_T)

        if self.post_shift:
            alpha = (alpha**2 / (self.shift_scale + (1 - self.shift_scale) * alpha**2)) ** 0.5

        alpha = torch.flip(alpha, (0,))
        return (alpha, timesteps) if return_idx else alpha

    def __call__(
        self,
        n: int,
        do_append_zero: bool = True,
        device: torch.device | str = "cpu",
        flip: bool = False,
        return_idx: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, np.ndarray]:
        if return_idx:
            table, idx = self.get_sigmas(n, device=device, return_idx=True)
        else:
            table = self.get_sigmas(n, device=device)
        if do_append_zero:
            table = torch.cat([table, table.new_zeros([1])])
        if flip:
            table = torch.flip(table, (0,))
        return (table, idx) if return_idx else table
