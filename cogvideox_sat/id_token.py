"""The ID token (`args.id_token`): a word put in front of every caption a run trains on.

As in diffusers' CogVideoX fine-tuning scripts, the token (e.g. a rare word naming a subject or a
style) is prepended to each training caption; validation prompts and sampling prompts get it too,
unless they already contain it. The run's `training_config.yaml` keeps it, so sampling with
`--lora-load <run>` (or `--load <run>` of a full fine-tune of ours) applies it without being told.

Unlike diffusers (plain string concatenation: "TOK" + "A cat" = "TOKA cat"), the token and the
caption are joined with one space unless the token already ends in whitespace.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Optional

from omegaconf import OmegaConf

CAPTION_KEY = "txt"  # the batch key of the captions (the T5 embedder's input_key)


def with_id_token(text: str, token: Optional[str]) -> str:
    """`text` with `token` in front (a training caption: always prepended when a token is set)."""
    if not token:
        return text
    if not text or token[-1].isspace():
        return token + text
    return f"{token} {text}"


def prompt_with_id_token(text: str, token: Optional[str]) -> str:
    """A validation or sampling prompt: the token in front unless the prompt already contains it."""
    if not token or token.strip() in text:
        return text
    return with_id_token(text, token)


def caption_batch(batch: dict[str, Any], token: Optional[str]) -> dict[str, Any]:
    """The batch with the token in front of each caption (`batch` itself when there is no token)."""
    if not token or CAPTION_KEY not in batch:
        return batch
    return {**batch, CAPTION_KEY: [with_id_token(t, token) for t in batch[CAPTION_KEY]]}


def run_id_token(checkpoint: Optional[str | os.PathLike]) -> Optional[str]:
    """The `args.id_token` the run of ours that wrote `checkpoint` (run or iteration folder)
    trained with, or None (no token, or not a run of ours)."""
    if not checkpoint:
        return None
    from cogvideox_sat.io.run_folder import find_training_config

    config = find_training_config(checkpoint)
    if config is None:
        return None
    token = OmegaConf.select(OmegaConf.load(config), "args.id_token")
    return str(token) if token else None


def sampling_id_token(args: argparse.Namespace) -> Optional[str]:
    """The token sampling prompts get: `args.id_token` when set ("" turns it off), else the one
    of the run in args.lora_load, else of the run in args.load."""
    if getattr(args, "id_token", None) is not None:
        return args.id_token or None
    return run_id_token(getattr(args, "lora_load", None)) or run_id_token(getattr(args, "load", None))
