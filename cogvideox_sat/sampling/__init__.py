"""Video generation from prompts (sample_video.py): prompts, images, weights, sampling, outputs.

Modules: `prompts` (file / stdin, `prompt@@image_path`, rank sharding), `images` (I2V first
frame), `weights` (base, LoRA-only on top, merge), `conditioning`, `decoding` (chunked VAE
decode, frame counts), `generate` (one sample: conditions, seeding, latents; shared with
validation during training), `reproduce` (`sample.json` of a validation sample and the
`--from-validation` flags), `outputs` (official folder names, mp4 + contact sheet or latents),
`placement` (device, torchrun ranks), `main` (`sample(args)`).
"""

from .main import sample

__all__ = ["sample"]
