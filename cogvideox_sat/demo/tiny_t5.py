"""A tiny random T5 text encoder and tokenizer, made offline in a second or two.

`make_tiny_t5(out_dir)` trains a small SentencePiece unigram model on a built-in corpus (the
demo clips' caption vocabulary plus some general words), wraps it as a transformers
`T5Tokenizer` and saves it next to a randomly initialised `T5EncoderModel` (v1.1 style: gated
GELU, no bias). The folder loads with `FrozenT5Embedder(model_dir=out_dir)` exactly like the
real `t5-v1_1-xxl` folder, so tests and the demo exercise the real loading and tokenising path
without a download.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

_COLORS = ("red", "green", "blue", "yellow", "white", "purple", "black", "orange")
_SHAPES = ("square", "circle", "bar", "triangle")
_MOTIONS = ("right", "left", "down", "up", "diagonally", "slowly", "quickly")
_EXTRA = (
    "The camera pans over a quiet street at night while rain falls on the road.",
    "A cat sleeps on a wooden table next to a window in the morning light.",
    "Waves roll onto a sandy beach under a bright summer sky.",
    "A person walks through a forest with tall green trees and soft fog.",
    "Close-up of a flower opening, petals unfolding in time-lapse.",
)


def demo_corpus() -> list[str]:
    """Sentences covering the demo captions' words (and a few ordinary ones)."""
    lines = [
        f"A {color} {shape} moving {motion} across a {bg} gradient background."
        for (color, bg), shape, motion in itertools.product(
            itertools.permutations(_COLORS[:6], 2), _SHAPES, _MOTIONS[:5]
        )
    ]
    return lines[::7] + list(_EXTRA) * 4 + [f"{c} {s} {m}" for c, s, m in zip(_COLORS, _SHAPES * 2, _MOTIONS)]


def make_tiny_t5(
    out_dir: str | Path,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    d_kv: int = 8,
    d_ff: int = 64,
    vocab_size: int = 96,
    seed: int = 0,
) -> Path:
    """Write a tiny T5 encoder + tokenizer to `out_dir` (created if needed); returns the path.

    `d_model` is the text embedding width the DiT's `text_hidden_size` must match.
    Deterministic for a given seed; leaves the global torch RNG untouched.
    """
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. SentencePiece unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos).
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(demo_corpus()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,  # a small corpus may support fewer pieces than asked for
        character_coverage=1.0,
        num_threads=1,
        seed_sentencepiece_size=10000,
        minloglevel=2,
    )
    (out / "spiece.model").write_bytes(model.getvalue())

    # 2. The transformers tokenizer, saved in the library's own format (no sentinel ids).
    tokenizer = T5Tokenizer.from_pretrained(str(out), extra_ids=0, local_files_only=True)
    tokenizer.save_pretrained(str(out))

    # 3. A random encoder, v1.1 style, sized for the tokenizer.
    config = T5Config(
        vocab_size=max(len(tokenizer), 8),
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        tie_word_embeddings=False,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = T5EncoderModel(config)
    encoder.save_pretrained(str(out))
    return out
