"""--base merging: later files win key by key, and every key remembers the file that set it."""

from pathlib import Path

import pytest

from cogvideox_sat.config import ConfigError, load_configs, validate_run
from tests.config.helpers import write_yaml


def test_later_files_win_and_origin_is_tracked(tmp_path: Path) -> None:
    a = write_yaml(tmp_path / "a.yaml", {"args": {"lr": 0.1, "seed": 1}, "model": {"scale_factor": 1.0}})
    b = write_yaml(tmp_path / "b.yaml", {"args": {"lr": 0.2}})
    loaded = load_configs([a, b])
    assert loaded.merged.args.lr == 0.2
    assert loaded.merged.args.seed == 1
    assert loaded.merged.model.scale_factor == 1.0
    assert loaded.file_of("args.lr") == b
    assert loaded.file_of("args.seed") == a
    # a nested key not set anywhere falls back to its closest parent's file
    assert loaded.file_of("model.scale_factor.whatever") == a


def test_order_reversed_reverses_the_winner(tmp_path: Path) -> None:
    a = write_yaml(tmp_path / "a.yaml", {"args": {"lr": 0.1}})
    b = write_yaml(tmp_path / "b.yaml", {"args": {"lr": 0.2}})
    assert load_configs([b, a]).merged.args.lr == 0.1


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_configs([str(tmp_path / "nope.yaml")])


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("args: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_configs([str(bad)])


def test_non_mapping_yaml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_configs([str(bad)])


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    a = write_yaml(tmp_path / "a.yaml", {"argz": {"lr": 0.1}})
    run = validate_run([a], "train")
    rendered = [p.render() for p in run.problems if p.key == "argz"]
    assert rendered and "unknown top-level section" in rendered[0] and "args" in rendered[0]
    assert rendered[0].startswith(a)
