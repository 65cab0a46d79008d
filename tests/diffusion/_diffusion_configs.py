"""Official-format config blocks shared by the diffusion tests."""

from __future__ import annotations


def discretization(shift: float = 1.0) -> dict:
    return {
        "target": "sgm.modules.diffusionmodules.discretizer.ZeroSNRDDPMDiscretization",
        "params": {"shift_scale": shift},
    }


def denoiser(shift: float = 1.0) -> dict:
    return {
        "target": "sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser",
        "params": {
            "num_idx": 1000,
            "quantize_c_noise": False,
            "weighting_config": {"target": "sgm.modules.diffusionmodules.denoiser_weighting.EpsWeighting"},
            "scaling_config": {"target": "sgm.modules.diffusionmodules.denoiser_scaling.VideoScaling"},
            "discretization_config": discretization(shift),
        },
    }


def loss(shift: float = 1.0, **params) -> dict:
    return {
        "target": "sgm.modules.diffusionmodules.loss.VideoDiffusionLoss",
        "params": {
            "fixed_frames": 0,
            "offset_noise_level": 0.0,
            "sigma_sampler_config": {
                "target": "sgm.modules.diffusionmodules.sigma_sampling.DiscreteSampling",
                "params": {
                    "uniform_sampling": True,
                    "group_num": 40,
                    "num_idx": 1000,
                    "discretization_config": discretization(shift),
                },
            },
            **params,
        },
    }
