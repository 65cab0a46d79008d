"""Every key of every official config, every `RunArgs` field and every `model:` key has a declared
behaviour (cogvideox_sat.config.keys): it acts, warns once naming what acts instead, or is an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from cogvideox_sat.arguments import RunArgs
from cogvideox_sat.config.keys import ARGS, MODEL, TRANSFORMER_ARGS, TRANSFORMER_ARGS_PATH, behaviour, key_table_markdown
from cogvideox_sat.engine import ENGINE_KEYS
from cogvideox_sat.models.transformer_args import TransformerArgs
from tests.conftest import OFFICIAL_FIXTURES, REPO
from tests.config.helpers import messages, run_with

OFFICIAL_CONFIGS = sorted((OFFICIAL_FIXTURES / "configs").glob("*.yaml"))
OUR_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def key_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every mapping key (list items walked, their index dropped)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from key_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            yield from key_paths(item, prefix)


@pytest.mark.parametrize("path", OFFICIAL_CONFIGS + OUR_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_key_has_a_declared_behaviour(path: Path) -> None:
    keys = sorted(set(key_paths(yaml.safe_load(path.read_text()))))
    assert keys
    undeclared = []
    for key in keys:
        try:
            behaviour(key)
        except KeyError:
            undeclared.append(key)
    assert not undeclared, f"{path.name}: keys without declared behaviour: {undeclared}"


def test_official_configs_are_present() -> None:
    assert len(OFFICIAL_CONFIGS) == 10, "the official key list is missing: /work/shared/fixtures/official/configs"


def test_every_run_arg_and_model_key_is_declared_once() -> None:
    assert set(ARGS) == set(RunArgs.model_fields)
    assert set(MODEL) == set(ENGINE_KEYS)
    with pytest.raises(KeyError):
        behaviour("args.not_a_key")


def test_every_transformer_args_key_is_declared() -> None:
    assert set(TRANSFORMER_ARGS) == set(TransformerArgs.__dataclass_fields__)
    assert behaviour(f"{TRANSFORMER_ARGS_PATH}.checkpoint_budget_gib") is TRANSFORMER_ARGS["checkpoint_budget_gib"]
    with pytest.raises(KeyError):
        behaviour(f"{TRANSFORMER_ARGS_PATH}.not_a_key")


# TransformerArgs owns the transformer_args errors: each declared one raises away from its neutral value
TRANSFORMER_ARGS_ERRORS = {"layernorm_order": "post", "model_parallel_size": 2, "is_decoder": True}


@pytest.mark.parametrize("name", TRANSFORMER_ARGS_ERRORS)
def test_transformer_args_error_keys_raise(name: str) -> None:
    assert {k for k, b in TRANSFORMER_ARGS.items() if b.kind == "error"} == set(TRANSFORMER_ARGS_ERRORS)
    TransformerArgs.from_config({name: TRANSFORMER_ARGS[name].neutral[0]})
    with pytest.raises(ValueError, match=name):
        TransformerArgs.from_config({name: TRANSFORMER_ARGS_ERRORS[name]})


def test_inert_transformer_args_key_warns_and_budget_errors_name_the_key(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"model": {"network_config": {"params": {"transformer_args": {"vocab_size": 1000}}}}})
    (msg,) = messages(run, f"{TRANSFORMER_ARGS_PATH}.vocab_size")
    assert run.ok and "no effect" in msg
    run = run_with(tmp_path, {"model": {"network_config": {"params": {"transformer_args": {"checkpoint_mode": "auto"}}}}})
    assert not run.ok and any("checkpoint_budget_gib" in m for m in messages(run, TRANSFORMER_ARGS_PATH))
    auto = {"checkpoint_activations": True, "checkpoint_mode": "auto", "checkpoint_budget_gib": 4.0}
    assert run_with(tmp_path, {"model": {"network_config": {"params": {"transformer_args": auto}}}}).ok


def test_readme_table_lists_every_key() -> None:
    table = key_table_markdown()
    readme = (REPO / "README.md").read_text()
    assert table in readme, "README key table is stale: paste cogvideox_sat.config.keys.key_table_markdown()"


# ---- the table turns into warnings and errors ---------------------------------------------------
def test_inert_key_prints_one_warning_naming_it_and_what_acts(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"summary_dir": "tb"}})
    (msg,) = messages(run, "args.summary_dir")
    assert run.ok and "no effect" in msg and "tensorboard" in msg


def test_inert_key_at_its_neutral_value_is_quiet(tmp_path: Path) -> None:
    assert not messages(run_with(tmp_path, {"args": {"summary_dir": "", "split": "1,0,0"}}), "args.summary_dir")


@pytest.mark.parametrize(
    "overlay, key",
    [
        ({"args": {"batch_from_same_dataset": True}}, "args.batch_from_same_dataset"),
    ],
)
def test_key_whose_absence_changes_results_is_an_error(tmp_path: Path, overlay: dict, key: str) -> None:
    run = run_with(tmp_path, overlay)
    (msg,) = messages(run, key)
    assert not run.ok and "not implemented" in msg


def test_model_and_loss_keys_warn(tmp_path: Path) -> None:
    overlay = {"model": {"augmentation_dropout": 0.15, "loss_fn_config": {"params": {"block_size": 4}}}}
    run = run_with(tmp_path, overlay)
    assert run.ok
    assert len(messages(run, "model.augmentation_dropout")) == 1
    assert len(messages(run, "model.loss_fn_config.params.block_size")) == 1


def test_checkpoint_args_override_the_transformer_args(tmp_path: Path) -> None:
    from cogvideox_sat.config import to_namespace

    run = run_with(tmp_path, {"args": {"checkpoint_activations": True, "checkpoint_num_layers": 2, "checkpoint_skip_layers": 1}})
    ta = to_namespace(run).model_config.network_config.params.transformer_args
    assert (ta.checkpoint_activations, ta.checkpoint_num_layers, ta.checkpoint_skip_layers) == (True, 2, 1)


def test_prefetch_factor_reaches_the_loader() -> None:
    import torch

    from cogvideox_sat.training.data import build_loader

    loader, _ = build_loader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), 1, 1, 0, 1, 0, prefetch_factor=7)
    assert loader.prefetch_factor == 7
    loader, _ = build_loader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), 1, 0, 0, 1, 0, prefetch_factor=7)
    assert loader.prefetch_factor is None


# ---- train_data_weights and split act, and bad values are errors naming the key ------------------
def test_weights_and_split_are_accepted(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"train_data_weights": [2], "split": "8,1,1", "block_size": 4}})
    assert run.ok and not messages(run, "args.train_data_weights") and not messages(run, "args.split")


@pytest.mark.parametrize(
    "overlay, key, text",
    [
        ({"args": {"train_data_weights": [2, 1]}}, "args.train_data_weights", "one weight per dataset"),
        ({"args": {"train_data_weights": [0]}}, "args.train_data_weights", "at least one > 0"),
        ({"args": {"split": "eight,1,1"}}, "args.split", "949,50,1"),
        ({"args": {"split": "0,1,0"}}, "args.split", "no training data"),
        ({"args": {"split": "8,1,1", "block_size": 0}}, "args.block_size", ">= 1"),
    ],
)
def test_bad_weights_or_split_are_errors(tmp_path: Path, overlay: dict, key: str, text: str) -> None:
    run = run_with(tmp_path, overlay)
    (msg,) = messages(run, key)
    assert not run.ok and text in msg


def test_mixed_images_example_config_validates(tmp_path: Path) -> None:
    from cogvideox_sat.config import validate_run
    from tests.config.helpers import demo_train_files, write_yaml

    (tmp_path / "stills").mkdir()
    files = [*demo_train_files(tmp_path), str(REPO / "configs" / "sft_images_mixed.yaml")]
    paths = {"train_data": [str(tmp_path / "data"), str(tmp_path / "stills")], "valid_data": [str(tmp_path / "data")]}
    run = validate_run([*files, write_yaml(tmp_path / "mixed_paths.yaml", {"args": paths})], "train")
    assert run.ok, messages(run)
    assert run.args.train_data_weights == [1, 4] and run.loaded.section("data")["params"]["still_images"] is True
