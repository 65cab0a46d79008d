"""Target resolution: official names map to our classes, unknown params are caught, and configs
cannot import arbitrary code unless --allow-any-target is given."""

from pathlib import Path

import pytest

from cogvideox_sat import instantiate_from_config, resolve_target
from cogvideox_sat.config import load_configs, validate_run
from cogvideox_sat.config.targets import check_blocks
from cogvideox_sat.registry import OFFICIAL_ALIASES, TargetError, allow_any_target, is_allowed
from tests.conftest import OFFICIAL_FIXTURES, REPO
from tests.config.helpers import messages, run_with

OFFICIAL_MODEL_CONFIGS = sorted((OFFICIAL_FIXTURES / "configs").glob("cogvideox*.yaml"))
SHIPPED_CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("alias", sorted(OFFICIAL_ALIASES))
def test_every_alias_resolves_to_our_class(alias: str) -> None:
    obj = resolve_target(alias)
    assert obj.__module__.startswith("cogvideox_sat."), obj.__module__
    assert obj.__name__ == alias.rsplit(".", 1)[-1]


@pytest.mark.parametrize("path", OFFICIAL_MODEL_CONFIGS + [OFFICIAL_FIXTURES / "configs" / "sft.yaml"], ids=lambda p: p.name)
def test_official_configs_resolve_every_target(path: Path) -> None:
    loaded = load_configs([str(path)])
    blocks = []
    for section in ("model", "data"):
        found, problems = check_blocks(loaded.section(section), section, loaded.file_of)
        assert not problems, [p.render() for p in problems]
        blocks += found
    assert blocks, "no target blocks found"
    assert all(b.cls is not None for b in blocks)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_resolve_every_target(path: Path) -> None:
    loaded = load_configs([str(path)])
    for section in ("model", "data"):
        _, problems = check_blocks(loaded.section(section), section, loaded.file_of)
        assert not problems, [p.render() for p in problems]


@pytest.mark.parametrize("model", [p for p in OFFICIAL_MODEL_CONFIGS], ids=lambda p: p.name)
def test_official_model_with_official_sft_only_misses_paths(model: Path) -> None:
    """Unchanged official files validate except for the placeholder paths they ship with."""
    run = validate_run([str(model), str(OFFICIAL_FIXTURES / "configs" / "sft.yaml")], "train")
    unexpected = [p.render() for p in run.errors if "does not exist" not in p.message]
    # the official 1.5 configs train at 81 frames only in a run that pads latents; sft.yaml says 49
    assert not [m for m in unexpected if "latent frames" not in m], unexpected


@pytest.mark.parametrize("model", sorted((REPO / "configs").glob("cogvideox*.yaml")), ids=lambda p: p.name)
def test_shipped_model_configs_validate_with_shipped_run_configs(model: Path) -> None:
    for run_cfg, kind in (("sft.yaml", "train"), ("inference.yaml", "sample")):
        run = validate_run([str(model), str(REPO / "configs" / run_cfg)], kind)
        unexpected = [p.render() for p in run.errors if "does not exist" not in p.message]
        if "1.5" in model.name:
            # 1.5 needs its own frame settings (81 frames / 22 latent frames at 768x1360)
            unexpected = [m for m in unexpected if "temporal patch" not in m]
        assert not unexpected, unexpected


def test_outside_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="outside the allow-list.*--allow-any-target"):
        resolve_target("os.system")
    with pytest.raises(TargetError, match="outside the allow-list"):
        instantiate_from_config({"target": "subprocess.Popen", "params": {"args": ["true"]}})
    assert not is_allowed("builtins.eval")


def test_allow_any_target_lifts_the_restriction() -> None:
    with allow_any_target():
        assert resolve_target("collections.OrderedDict").__name__ == "OrderedDict"
    with pytest.raises(TargetError):
        resolve_target("collections.OrderedDict")


def test_allowed_targets_instantiate() -> None:
    layer = instantiate_from_config({"target": "torch.nn.Linear", "params": {"in_features": 2, "out_features": 3}})
    assert tuple(layer.weight.shape) == (3, 2)
    assert type(instantiate_from_config({"target": "torch.nn.Identity"})).__name__ == "Identity"


def test_unknown_official_name_gets_a_suggestion() -> None:
    with pytest.raises(TargetError, match="no equivalent.*DynamicCFG"):
        resolve_target("sgm.modules.diffusionmodules.guiders.DynamicCF")


def test_outside_target_in_a_config_is_a_validation_problem(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"model": {"loss_fn_config": {"target": "os.system", "params": {}}}})
    (msg,) = messages(run, "model.loss_fn_config.target")
    assert "allow-list" in msg and "overlay.yaml" in msg


def test_misspelt_param_names_the_block_and_closest(tmp_path: Path) -> None:
    overlay = {"model": {"denoiser_config": {"params": {"discretization_config": {"params": {"shift_scal": 2.0}}}}}}
    run = run_with(tmp_path, overlay)
    key = "model.denoiser_config.params.discretization_config.params.shift_scal"
    (msg,) = messages(run, key)
    assert "has no parameter 'shift_scal'" in msg and "shift_scale" in msg and "overlay.yaml" in msg


def test_unknown_model_key_is_refused(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"model": {"scale_facter": 0.7}})
    (msg,) = messages(run, "model.scale_facter")
    assert "unknown key" in msg and "scale_factor" in msg


def test_unknown_deepspeed_keys_are_refused(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"deepspeed": {"gradient_clippin": 1.0, "zero_optimization": {"stage": 1, "overlap_com": True}}})
    (top,) = messages(run, "deepspeed.gradient_clippin")
    assert "gradient_clipping" in top
    (zero,) = messages(run, "deepspeed.zero_optimization.overlap_com")
    assert "overlap_comm" in zero


def test_unknown_key_in_embedder_block_is_refused(tmp_path: Path) -> None:
    block = {"target": "cogvideox_sat.conditioner.FrozenT5Embedder", "ucg_rat": 0.1, "params": {"model_dir": str(tmp_path)}}
    run = run_with(tmp_path, {"model": {"conditioner_config": {"params": {"emb_models": [block]}}}})
    (msg,) = messages(run, "model.conditioner_config.params.emb_models.0.ucg_rat")
    assert "ucg_rate" in msg


def test_data_section_params_checked(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"data": {"params": {"max_num_frame": 9}}})
    assert any("has no parameter 'max_num_frame'" in m for m in messages(run, "data.params.max_num_frame"))
