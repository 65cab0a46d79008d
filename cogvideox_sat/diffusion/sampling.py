"""Video samplers over the zero-SNR DDPM schedule: DDIM and DPM-Solver++(2M), SDE and ODE.

All three follow the official loop exactly (same schedule, same timestep passed to the
network, same random draws) so that a seed gives the official samples:

- the schedule is alpha_i = sqrt(alpha_cumprod) for `num_steps` DDPM timesteps, noisiest
  first (alpha_0 = 0 exactly), with a final alpha = 1;
- step i moves alpha_i -> alpha_{i+1} and conditions the network on timestep
  timesteps[-(i + 1)] (999, 979, ... for 50 steps);
- the model predicts v; the denoiser turns it into x_0 ("denoised").

Latents are [b, t, c, h, w] in float32. The samplers draw noise with the global torch RNG;
they know nothing of process groups (model-parallel ranks share the seed, as officially).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from tqdm import tqdm

from cogvideox_sat.diffusion.guiders import DynamicCFG, IdentityGuider
from cogvideox_sat.diffusion.step_cache import StepCache
from cogvideox_sat.diffusion.util import append_dims
from cogvideox_sat.registry import instantiate_from_config

Denoiser = Callable[..., torch.Tensor]


class VideoDDIMSampler:
    """Deterministic DDIM over the video schedule; base class of the DPM-Solver++ samplers.

    `device` is accepted for config compatibility; tables are built on the latents' device.
    `fixed_frames` > 0 keeps the first latent frames of the initial `x` fixed (re-noised at
    every step when `sdedit`), as the official VPSDEDPMPP2MSampler does.
    `step_cache_threshold` (ours, off by default) skips the transformer's blocks after the first
    on steps where the first block's residual changed less than this (see `step_cache`);
    `last_step_cache` holds the counts of the last call.
    """

    def __init__(
        self,
        discretization_config: Mapping[str, Any],
        num_steps: int | None = None,
        guider_config: Mapping[str, Any] | None = None,
        verbose: bool = False,
        device: str = "cuda",
        fixed_frames: int = 0,
        sdedit: bool = False,
        step_cache_threshold: float | None = None,
    ) -> None:
        self.num_steps = num_steps
        self.discretization = instantiate_from_config(discretization_config)
        self.guider = IdentityGuider() if guider_config is None else instantiate_from_config(guider_config)
        self.verbose = verbose
        self.device = device
        self.fixed_frames = fixed_frames
        self.sdedit = sdedit
        if step_cache_threshold is not None:
            StepCache(step_cache_threshold)  # validates the value at construction
        self.step_cache_threshold = step_cache_threshold
        self.last_step_cache: StepCache | None = None

    def _new_step_cache(self) -> StepCache | None:
        cache = None if self.step_cache_threshold is None else StepCache(self.step_cache_threshold)
        self.last_step_cache = cache
        return cache

    # --- schedule -------------------------------------------------------------------------

    def _steps(self, num_steps: int | None) -> int:
        n = self.num_steps if num_steps is None else num_steps
        if n is None:
            raise ValueError("sampler: set sampler_config.params.num_steps or pass num_steps")
        return int(n)

    def sampling_schedule(
        self, num_steps: int | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha [n+1] float32 ascending from 0 to 1, timesteps [n+1] int64 with a leading -1)."""
        alpha, idx = self.discretization(
            self._steps(num_steps), device=device, return_idx=True, do_append_zero=False
        )
        alpha = torch.cat([alpha, alpha.new_ones([1])])
        idx = torch.as_tensor(list(idx), dtype=torch.int64)
        timesteps = torch.cat([idx.new_full([1], -1), idx])
        return alpha, timesteps

    def prepare_sampling_loop(
        self, x: torch.Tensor, cond: dict, uc: dict | None = None, num_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, dict, dict, torch.Tensor]:
        alpha, timesteps = self.sampling_schedule(num_steps, device=x.device)
        s_in = x.new_ones([x.shape[0]])
        return x, s_in, alpha, len(alpha), cond, cond if uc is None else uc, timesteps

    def step_range(self, num_sigmas: int) -> Iterable[int]:
        steps = range(num_sigmas - 1)
        if self.verbose:
            steps = tqdm(steps, desc=f"Sampling with {type(self).__name__}", total=num_sigmas - 1)
        return steps

    def _cfg_step_index(self, timestep: torch.Tensor, n: int) -> torch.Tensor:
        # Official: num_steps - DDPM timestep (a negative number); see DynamicCFG.
        return (self.num_steps if self.num_steps is not None else n) - timestep

    # --- one network evaluation -----------------------------------------------------------

    def denoise(
        self,
        x: torch.Tensor,
        denoiser: Denoiser,
        alpha: torch.Tensor,
        cond: dict,
        uc: dict,
        timestep: torch.Tensor,
        step_index: torch.Tensor,
        scale: float | torch.Tensor | None = None,
        scale_emb: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
        step_cache: StepCache | None = None,
    ) -> torch.Tensor:
        """x_0 estimate at `alpha` [b]; with CFG the batch is doubled inside (uncond first)."""
        model_inputs: dict[str, Any] = {}
        if ofs is not None:
            model_inputs["ofs"] = ofs
        if step_cache is not None:
            model_inputs["step_cache"] = step_cache
        # The timestep index reaches the network as a float tensor, as in the official loop.
        if not isinstance(scale, torch.Tensor) and scale == 1:
            model_inputs["idx"] = x.new_ones([x.shape[0]]) * timestep
            if scale_emb is not None:
                model_inputs["scale_emb"] = scale_emb
            return denoiser(x, alpha, cond, **model_inputs).to(torch.float32)
        model_inputs["idx"] = torch.cat([x.new_ones([x.shape[0]]) * timestep] * 2)
        denoised = denoiser(*self.guider.prepare_inputs(x, alpha, cond, uc), **model_inputs)
        denoised = denoised.to(torch.float32)
        sigma = (1 - alpha**2) ** 0.5
        if isinstance(self.guider, DynamicCFG):
            return self.guider(denoised, sigma, step_index=step_index, scale=scale)
        return self.guider(denoised, sigma, scale=scale)

    # --- the loop -------------------------------------------------------------------------

    def sampler_step(
        self,
        alpha: torch.Tensor,
        next_alpha: torch.Tensor,
        denoiser: Denoiser,
        x: torch.Tensor,
        cond: dict,
        uc: dict,
        timestep: torch.Tensor,
        step_index: torch.Tensor,
        **denoise_kwargs: Any,
    ) -> torch.Tensor:
        denoised = self.denoise(x, denoiser, alpha, cond, uc, timestep, step_index, **denoise_kwargs)
        a_t = ((1 - next_alpha**2) / (1 - alpha**2)) ** 0.5
        b_t = next_alpha - alpha * a_t
        return append_dims(a_t, x.ndim) * x + append_dims(b_t, x.ndim) * denoised

    def __call__(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        cond: dict,
        uc: dict | None = None,
        num_steps: int | None = None,
        scale: float | torch.Tensor | None = None,
        scale_emb: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise the pure-noise latents `x` [b, t, c, h, w] with `denoiser(x, alpha, cond,
        **model_inputs)`; returns the final x_0 estimate."""
        x, s_in, alpha, num_sigmas, cond, uc, timesteps = self.prepare_sampling_loop(x, cond, uc, num_steps)
        n = num_sigmas - 1
        kwargs = dict(scale=scale, scale_emb=scale_emb, ofs=ofs, step_cache=self._new_step_cache())
        for i in self.step_range(num_sigmas):
            timestep = timesteps[-(i + 1)]
            x = self.sampler_step(
                s_in * alpha[i], s_in * alpha[i + 1], denoiser, x, cond, uc,
                timestep=timestep, step_index=self._cfg_step_index(timestep, n), **kwargs,
            )
        return x


class _DPMPP2MBase(VideoDDIMSampler):
    """DPM-Solver++(2M) in log-SNR time; subclasses choose the SDE or ODE multipliers."""

    stochastic: bool = False

    @staticmethod
    def _lambda(alpha: torch.Tensor) -> torch.Tensor:
        """Half log-SNR: log(alpha / sqrt(1 - alpha^2)) (-inf at alpha = 0)."""
        alpha_cumprod = alpha**2
        return ((alpha_cumprod / (1 - alpha_cumprod)) ** 0.5).log()

    def get_variables(
        self, alpha: torch.Tensor, next_alpha: torch.Tensor, previous_alpha: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        lamb, lamb_next = self._lambda(alpha), self._lambda(next_alpha)
        h = lamb_next - lamb
        if previous_alpha is None:
            return h, None, lamb, lamb_next
        r = (lamb - self._lambda(previous_alpha)) / h
        return h, r, lamb, lamb_next

    def get_mult(
        self,
        h: torch.Tensor,
        r: torch.Tensor | None,
        alpha: torch.Tensor,
        next_alpha: torch.Tensor,
        previous_alpha: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def sampler_step(  # type: ignore[override]
        self,
        old_denoised: torch.Tensor | None,
        previous_alpha: torch.Tensor | None,
        alpha: torch.Tensor,
        next_alpha: torch.Tensor,
        denoiser: Denoiser,
        x: torch.Tensor,
        cond: dict,
        uc: dict,
        idx: int,
        timestep: torch.Tensor,
        step_index: torch.Tensor,
        **denoise_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step; returns (x at next_alpha, this step's x_0 estimate). `idx` counts down to
        1, the last step, which returns the x_0 estimate itself."""
        # 1. x_0 estimate at the current level.
        denoised = self.denoise(x, denoiser, alpha, cond, uc, timestep, step_index, **denoise_kwargs)
        if idx == 1:
            return denoised, denoised
        # 2. First-order update (and, for the SDE, fresh noise).
        h, r, _, _ = self.get_variables(alpha, next_alpha, previous_alpha)
        mult = [append_dims(m, x.ndim) for m in self.get_mult(h, r, alpha, next_alpha, previous_alpha)]
        if self.stochastic:
            mult_noise = append_dims((1 - next_alpha**2) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5, x.ndim)
            x_standard = mult[0] * x - mult[1] * denoised + mult_noise * torch.randn_like(x)
        else:
            x_standard = mult[0] * x - mult[1] * denoised
        if old_denoised is None or torch.sum(next_alpha) < 1e-14:
            return x_standard, denoised
        # 3. Second-order update from the previous x_0 estimate. The SDE draws new noise here
        # even though the first-order draw is discarded: that keeps the official random stream.
        denoised_d = mult[2] * denoised - mult[3] * old_denoised
        x_advanced = mult[0] * x - mult[1] * denoised_d
        if self.stochastic:
            x_advanced = x_advanced + mult_noise * torch.randn_like(x)
        return x_advanced, denoised

    def __call__(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        cond: dict,
        uc: dict | None = None,
        num_steps: int | None = None,
        scale: float | torch.Tensor | None = None,
        scale_emb: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x, s_in, alpha, num_sigmas, cond, uc, timesteps = self.prepare_sampling_loop(x, cond, uc, num_steps)
        n = num_sigmas - 1
        kwargs = dict(scale=scale, scale_emb=scale_emb, ofs=ofs, step_cache=self._new_step_cache())
        prefix_frames = x[:, : self.fixed_frames] if self.fixed_frames > 0 else None
        old_denoised = None
        for i in self.step_range(num_sigmas):
            if prefix_frames is not None:
                x = torch.cat([self._prefix_at(prefix_frames, alpha[i], s_in), x[:, self.fixed_frames :]], dim=1)
            timestep = timesteps[-(i + 1)]
            x, old_denoised = self.sampler_step(
                old_denoised,
                None if i == 0 else s_in * alpha[i - 1],
                s_in * alpha[i],
                s_in * alpha[i + 1],
                denoiser,
                x,
                cond,
                uc,
                idx=n - i,
                timestep=timestep,
                step_index=self._cfg_step_index(timestep, n),
                **kwargs,
            )
        if prefix_frames is not None:
            x = torch.cat([prefix_frames, x[:, self.fixed_frames :]], dim=1)
        return x

    def _prefix_at(self, prefix: torch.Tensor, alpha: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
        """The fixed prefix frames as they enter step i: clean, or re-noised to alpha (sdedit)."""
        if not self.sdedit:
            return prefix
        noise = torch.randn_like(prefix)
        return alpha * prefix + noise * append_dims(s_in * (1 - alpha**2) ** 0.5, prefix.ndim)


class VPSDEDPMPP2MSampler(_DPMPP2MBase):
    """Stochastic DPM-Solver++(2M) (the sampler of every official CogVideoX config)."""

    stochastic = True

    def get_mult(self, h, r, alpha, next_alpha, previous_alpha):
        mult1 = ((1 - next_alpha**2) / (1 - alpha**2)) ** 0.5 * (-h).exp()
        mult2 = (-2 * h).expm1() * next_alpha
        if previous_alpha is None:
            return mult1, mult2
        return mult1, mult2, 1 + 1 / (2 * r), 1 / (2 * r)


class VPODEDPMPP2MSampler(_DPMPP2MBase):
    """Deterministic DPM-Solver++(2M).

    Unlike the official class, `scale`, `scale_emb` and `ofs` reach the denoiser (officially
    they were dropped, which made this sampler unusable for CogVideoX 1.5 image-to-video).
    `fixed_frames` is honoured here too (officially ignored by this class).
    """

    stochastic = False

    def get_mult(self, h, r, alpha, next_alpha, previous_alpha):
        mult1 = ((1 - next_alpha**2) / (1 - alpha**2)) ** 0.5
        mult2 = (-h).expm1() * next_alpha
        if previous_alpha is None:
            return mult1, mult2
        return mult1, mult2, 1 + 1 / (2 * r), 1 / (2 * r)
