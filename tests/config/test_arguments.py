"""The args namespace: official keys known, unknown keys refused, command line beats YAML."""

from pathlib import Path

from cogvideox_sat.arguments import RunArgs, build_parser
from cogvideox_sat.config import load_configs, to_namespace
from tests.conftest import OFFICIAL_FIXTURES
from tests.config.helpers import messages, run_with

SAT_GROUP_KEYS = {
    # SwissArmyTransformer 0.4.12 add_training_args / add_evaluation_args / add_data_args
    "experiment_name", "train_iters", "batch_size", "lr", "mode", "seed", "zero_stage",
    "checkpoint_activations", "checkpoint_num_layers", "checkpoint_skip_layers", "fp16", "bf16",
    "gradient_accumulation_steps", "profiling", "epochs", "log_interval", "summary_dir", "save_args",
    "lr_decay_iters", "lr_decay_style", "lr_decay_ratio", "warmup", "weight_decay", "save", "load",
    "force_train", "save_interval", "no_save_rng", "no_load_rng", "resume_dataloader",
    "distributed_backend", "local_rank", "exit_interval", "wandb", "wandb_project_name",
    "eval_batch_size", "eval_iters", "eval_interval", "strict_eval",
    "train_data", "train_data_weights", "iterable_dataset", "iterable_dataset_eval",
    "batch_from_same_dataset", "valid_data", "test_data", "split", "num_workers", "block_size",
    "prefetch_factor",
}


def test_sat_argument_groups_are_all_known() -> None:
    assert SAT_GROUP_KEYS <= set(RunArgs.model_fields)


def test_sat_parser_dests_match_when_sat_is_installed() -> None:
    import argparse

    sat_args = __import__("sat.arguments", fromlist=["add_training_args"])
    parser = argparse.ArgumentParser()
    for add in (sat_args.add_training_args, sat_args.add_evaluation_args, sat_args.add_data_args):
        add(parser)
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests <= set(RunArgs.model_fields), sorted(dests - set(RunArgs.model_fields))


def test_every_official_args_key_is_known() -> None:
    for name in ("sft.yaml", "inference.yaml"):
        keys = set(load_configs([str(OFFICIAL_FIXTURES / "configs" / name)]).section("args"))
        assert keys <= set(RunArgs.model_fields), (name, keys - set(RunArgs.model_fields))


def test_unknown_args_key_names_file_key_and_closest(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"train_iter": 5}})
    (msg,) = messages(run, "args.train_iter")
    assert "overlay.yaml" in msg and "unknown key" in msg and "train_iters" in msg
    assert not run.ok


def test_wrong_type_is_reported(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"lr_decay_style": "cosin"}})
    (msg,) = messages(run, "args.lr_decay_style")
    assert "cosine" in msg and "overlay.yaml" in msg


def test_command_line_overrides_yaml(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"seed": 1}}, cli={"seed": "77", "lr": "0.5"})
    assert run.args.seed == 77
    assert run.args.lr == 0.5


def test_cli_errors_are_attributed_to_the_command_line(tmp_path: Path) -> None:
    run = run_with(tmp_path, cli={"seed": "abc"})
    (msg,) = messages(run, "args.seed")
    assert msg.startswith("<command line>")


def test_parser_accepts_official_flag_spellings() -> None:
    parser = build_parser("t")
    ns = parser.parse_args(["--base", "a.yaml", "b.yaml", "--seed", "5", "--local_rank=1", "--train-iters", "3", "--fp16"])
    assert ns.base == ["a.yaml", "b.yaml"] and ns.seed == "5" and ns.local_rank == "1"
    assert ns.train_iters == "3" and ns.fp16 is True
    # unset flags stay unset, so YAML values are not overwritten by parser defaults
    assert not hasattr(ns, "lr")


def test_namespace_takes_training_settings_from_deepspeed(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"deepspeed": {"train_micro_batch_size_per_gpu": 3, "optimizer": {"type": "AdamW", "params": {"lr": 0.25}}}})
    assert run.ok, messages(run)
    ns = to_namespace(run)
    assert ns.batch_size == 3 and ns.lr == 0.25 and ns.deepspeed is True and ns.zero_stage == 1
    assert ns.model_config.network_config.params.hidden_size == 64
    assert ns.data_config.params.max_num_frames == 9


def test_train_iters_default_matches_official(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"train_iters": None}})
    assert run.ok, messages(run)
    assert any("neither train_iters nor epochs" in m for m in messages(run, "args.train_iters"))
    assert to_namespace(run).train_iters == 10000
