"""FrozenT5Embedder (local folder only, max_length padding) and GeneralConditioner
(classifier-free dropout, unconditional conditioning) on a tiny random T5."""

from __future__ import annotations

import pytest
import torch

from cogvideox_sat.conditioner import FrozenT5Embedder, GeneralConditioner
from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
from cogvideox_sat.registry import instantiate_from_config

MAX_LEN = 12
PROMPTS = ["A red square moving right across a blue gradient background.", "a cat", "green circle up"]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32)


def conditioner_cfg(t5_dir, ucg_rate: float, **extra) -> dict:
    """The official conditioner block with the official target names."""
    return {
        "target": "sgm.modules.GeneralConditioner",
        "params": {
            "emb_models": [
                {
                    "is_trainable": False,
                    "input_key": "txt",
                    "ucg_rate": ucg_rate,
                    "target": "sgm.modules.encoders.modules.FrozenT5Embedder",
                    "params": {"model_dir": str(t5_dir), "max_length": MAX_LEN},
                    **extra,
                }
            ]
        },
    }


def test_t5_pads_to_max_length_and_embeds(t5_dir):
    t5 = FrozenT5Embedder(model_dir=str(t5_dir), max_length=MAX_LEN)
    assert FrozenT5Embedder.path_params == ("model_dir",)
    tokens = t5.tokenize(PROMPTS)
    assert tokens.shape == (3, MAX_LEN)
    pad, eos = t5.tokenizer.pad_token_id, t5.tokenizer.eos_token_id
    assert (pad, eos) == (0, 1)
    # Long prompt: truncated to exactly max_length, ending in </s>; short: </s> then <pad>s.
    assert tokens[0, -1].item() == eos and (tokens[0] != pad).all()
    short = tokens[1].tolist()
    n = short.index(eos)
    assert 0 < n < MAX_LEN - 1 and all(t == pad for t in short[n + 1 :])
    out = t5(PROMPTS)
    assert out.shape == (3, MAX_LEN, 32) and torch.isfinite(out).all()
    assert out.requires_grad is False and not any(p.requires_grad for p in t5.parameters())
    # Same prompt, same embedding regardless of the other prompts in the batch.
    torch.testing.assert_close(t5(PROMPTS[1:2])[0], out[1])


def test_missing_folder_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "t5-v1_1-xxl"
    with pytest.raises(FileNotFoundError, match="t5-v1_1-xxl.*make_tiny_t5"):
        FrozenT5Embedder(model_dir=str(missing))
    with pytest.raises(FileNotFoundError, match="google/t5-v1_1-xxl"):
        FrozenT5Embedder()  # the official default is a hub id: never downloaded
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty)):
        FrozenT5Embedder(model_dir=str(empty))


def test_ucg_rate_one_drops_all_text_and_zero_keeps_it(t5_dir):
    batch = {"txt": list(PROMPTS)}
    keep = instantiate_from_config(conditioner_cfg(t5_dir, 0.0))
    assert isinstance(keep, GeneralConditioner)
    reference = keep.embedders[0](PROMPTS)
    c = keep(batch)
    assert set(c) == {"crossattn"} and c["crossattn"].shape == (3, MAX_LEN, 32)
    torch.testing.assert_close(c["crossattn"], reference)
    assert reference.abs().sum() > 0

    drop = instantiate_from_config(conditioner_cfg(t5_dir, 1.0))
    assert torch.count_nonzero(drop(batch)["crossattn"]) == 0


def test_ucg_dropout_is_per_sample_and_seeded(t5_dir):
    cond = instantiate_from_config(conditioner_cfg(t5_dir, 0.5))
    batch = {"txt": PROMPTS * 8}
    reference = cond.embedders[0](batch["txt"])
    torch.manual_seed(0)
    out = cond(batch)["crossattn"]
    dropped = (out.flatten(1) == 0).all(1)
    kept = ~dropped
    assert 0 < dropped.sum() < len(batch["txt"])
    torch.testing.assert_close(out[kept], reference[kept])
    torch.manual_seed(0)
    assert torch.equal(cond(batch)["crossattn"], out)


def test_unconditional_conditioning_for_sampling(t5_dir):
    cond = instantiate_from_config(conditioner_cfg(t5_dir, 1.0))
    batch = {"txt": PROMPTS[:2]}
    batch_uc = {"txt": ["", ""]}
    c, uc = cond.get_unconditional_conditioning(batch, batch_uc=batch_uc, force_uc_zero_embeddings=["txt"])
    # Dropout is off while sampling: c is the real text embedding even with ucg_rate 1.0 ...
    torch.testing.assert_close(c["crossattn"], cond.embedders[0](PROMPTS[:2]))
    # ... the unconditional side is all zeros (official CogVideoX sampling) ...
    assert uc["crossattn"].shape == c["crossattn"].shape and torch.count_nonzero(uc["crossattn"]) == 0
    # ... and the training rate is back afterwards.
    assert cond.embedders[0].ucg_rate == 1.0
    # Without forcing zeros the uncond side embeds the negative prompt.
    _, uc_text = cond.get_unconditional_conditioning(batch, batch_uc=batch_uc)
    torch.testing.assert_close(uc_text["crossattn"], cond.embedders[0](["", ""]))


def test_frozen_embedder_stays_in_eval_and_outside_autograd(t5_dir):
    cond = instantiate_from_config(conditioner_cfg(t5_dir, 0.0))
    cond.train()
    assert not cond.embedders[0].training and not cond.embedders[0].transformer.training
    assert not any(p.requires_grad for p in cond.parameters())
    assert cond({"txt": PROMPTS})["crossattn"].grad_fn is None


def test_legacy_ucg_value_replaces_the_input(t5_dir):
    cond = instantiate_from_config(conditioner_cfg(t5_dir, 1.0, legacy_ucg_value=""))
    batch = {"txt": list(PROMPTS)}
    out = cond(batch)["crossattn"]
    assert batch["txt"] == ["", "", ""]
    torch.testing.assert_close(out, cond.embedders[0](["", "", ""]))


def test_unknown_embedder_key_is_refused(t5_dir):
    with pytest.raises(ValueError, match="ucg_rat"):
        instantiate_from_config(conditioner_cfg(t5_dir, 0.1, ucg_rat=0.1))


def test_tiny_t5_is_deterministic_and_leaves_the_rng_alone(tmp_path, t5_dir):
    from safetensors.torch import load_file

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    again = make_tiny_t5(tmp_path / "again", d_model=32)
    assert torch.equal(torch.rand(3), before)
    a, b = load_file(str(t5_dir / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (again / "spiece.model").read_bytes() == (t5_dir / "spiece.model").read_bytes()


def test_precomputed_text_embeddings_skip_t5_but_keep_dropout(t5_dir, monkeypatch):
    cond = instantiate_from_config(conditioner_cfg(t5_dir, ucg_rate=0.0))
    real = cond({"txt": PROMPTS})["crossattn"]
    # a latent-cache batch carries T5's output as `txt_emb`: T5 must not run again
    monkeypatch.setattr(type(cond.embedders[0]), "forward", lambda *a, **k: pytest.fail("T5 ran on a cached batch"))
    assert torch.equal(cond({"txt": PROMPTS, "txt_emb": real})["crossattn"], real)
    dropped = instantiate_from_config(conditioner_cfg(t5_dir, ucg_rate=1.0))
    assert torch.count_nonzero(dropped({"txt": PROMPTS, "txt_emb": real})["crossattn"]) == 0
