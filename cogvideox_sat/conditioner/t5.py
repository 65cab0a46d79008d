"""FrozenT5Embedder: text -> T5 encoder hidden states, loaded from a local folder only."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from cogvideox_sat.conditioner.embedder import AbstractEmbModel

_FIX = (
    "Download the T5 encoder once and point model_dir at the folder, e.g. the `text_encoder` "
    "and `tokenizer` folders of THUDM/CogVideoX-2b merged into one folder, or "
    "`huggingface-cli download google/t5-v1_1-xxl --local-dir t5-v1_1-xxl`; for a tiny offline "
    "stand-in use cogvideox_sat.demo.tiny_t5.make_tiny_t5(folder)."
)


class FrozenT5Embedder(AbstractEmbModel):
    """T5 v1.1 encoder over prompts padded (and truncated) to exactly `max_length` tokens.

    Output: last hidden states [b, max_length, d_model] (4096 for t5-v1_1-xxl), the DiT's text
    tokens. `model_dir` must be a local folder holding a transformers T5EncoderModel and its
    T5Tokenizer; nothing is ever downloaded. `device` is accepted for config compatibility:
    tokens go to wherever the encoder's weights are. `cache_dir` is accepted and unused (local
    folders only). The encoder runs with autocast off, as officially.
    """

    path_params: ClassVar[tuple[str, ...]] = ("model_dir",)

    def __init__(
        self,
        model_dir: str = "google/t5-v1_1-xxl",
        device: str = "cuda",
        max_length: int = 77,
        freeze: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import T5EncoderModel, T5Tokenizer

        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"FrozenT5Embedder: model_dir '{model_dir}' is not a local folder. {_FIX}")
        try:
            self.tokenizer = T5Tokenizer.from_pretrained(str(folder), local_files_only=True)
            self.transformer = T5EncoderModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"FrozenT5Embedder: cannot load a T5 encoder and tokenizer from '{folder}' ({err}). {_FIX}"
            ) from err
        self.device = device
        self.max_length = max_length
        self.cache_dir = cache_dir
        if freeze:
            self.freeze()

    def freeze(self) -> None:
        self.transformer.eval()
        for param in self.parameters():
            param.requires_grad = False

    def tokenize(self, text: list[str]) -> torch.Tensor:
        """Token ids [b, max_length]: truncated, padded with <pad> to max_length."""
        encoding = self.tokenizer(
            list(text),
            truncation=True,
            max_length=self.max_length,
            return_length=True,
            return_overflowing_tokens=False,
            padding="max_length",
            return_tensors="pt",
        )
        return encoding["input_ids"]

    def forward(self, text: list[str]) -> torch.Tensor:
        weight = next(self.transformer.parameters())
        tokens = self.tokenize(text).to(weight.device)
        with torch.autocast(weight.device.type, enabled=False):
            return self.transformer(input_ids=tokens).last_hidden_state

    def encode(self, text: list[str]) -> torch.Tensor:
        return self(text)
