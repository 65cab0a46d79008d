"""Resume on another process count: saved on 2 ranks, resumed on 1, saved, resumed on 2 again,
with ZeRO-2 (LoRA) and ZeRO-3 (full fine-tune) through the training checkpoint functions
(`save_checkpoint`, `reshard.prepare_resume` -> DeepSpeed universal checkpoint, `resume_checkpoint`,
`reshard.data_position`).

The global batch stays 2 (2 ranks x 1, 1 rank x 2) and every sample's draw is pinned to the sample
(see _zero_testkit), so the runs are comparable exactly: after each resume the fp32 weights and
both Adam moments equal the saved ones bit for bit, the sampler continues with the samples the
saving run would have taken next, and the next loss equals the saving run's next loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _parallel_testkit import run_ranks
from _zero_testkit import build_engine, ds_config, initialize, optimizer_view, samples, step

pytestmark = pytest.mark.slow  # ~45 s on 2 cores: three DeepSpeed worlds (2, 1, 2 processes)

GLOBAL_BATCH = 2
CASES = {"zero2_lora": (2, "tiny_t2v_lora"), "zero3_full": (3, "tiny_t2v")}


def _client(sampler: Any, rng: dict, world: int) -> dict[str, Any]:
    """What the training loop saves besides DeepSpeed's own state."""
    from cogvideox_sat.training.reshard import gather_rng_states

    return {"rng": rng, "rng_per_rank": gather_rng_states(rng), "data": sampler.state_dict(), "data_parallel_size": world, "skipped": {}}


def _worker(rank: int, world: int, t5_dir: str, root: str, resume_tag: int | None, steps: int) -> dict[str, Any]:
    """Resume from `resume_tag` (None: start fresh), then `steps` steps; save after the first."""
    import deepspeed

    from cogvideox_sat.training.checkpoint import resume_checkpoint, save_checkpoint
    from cogvideox_sat.training.data import ResumableShardSampler
    from cogvideox_sat.training.main import optimizer_config
    from cogvideox_sat.training.reshard import data_position, prepare_resume
    from cogvideox_sat.training.rng import capture_rng_state

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    micro = GLOBAL_BATCH // world
    data = samples(8)
    results = {}
    for case, (stage, model) in CASES.items():
        folder = Path(root) / case
        config = optimizer_config(ds_config(stage, micro), torch.device("cpu"))
        load_dir = prepare_resume(folder, None if resume_tag is None else str(resume_tag), config)
        ds_engine = initialize(build_engine(model, stage, t5_dir), config)
        sampler = ResumableShardSampler(len(data), rank, world, seed=7)
        out: dict[str, Any] = {"universal": load_dir is not None, "losses": []}
        iteration = 0
        if resume_tag is not None:
            client = resume_checkpoint(ds_engine, folder, load_dir)
            iteration = int(client["iteration"])
            sampler.load_state_dict(data_position(client, world))
            out["resumed"] = optimizer_view(ds_engine)
            out["position"] = sampler.state_dict()
        order = iter(sampler)
        for i in range(steps):
            loss, _ = step(ds_engine, [data[next(order)] for _ in range(micro)])
            out["losses"].append(loss)
            ds_engine.step()
            iteration += 1
            if i == 0:
                save_checkpoint(ds_engine, folder, iteration, _client(sampler, capture_rng_state(), world))
                out["saved"] = optimizer_view(ds_engine)
                out["saved_iteration"] = iteration
        results[case] = out
        ds_engine.destroy()
    return results


def _assert_equal_views(got: dict, expected: dict, what: str) -> None:
    for key in ("weights", "exp_avg", "exp_avg_sq"):
        assert got[key].keys() == expected[key].keys()
        for name, tensor in expected[key].items():
            assert torch.equal(got[key][name], tensor), f"{what}: {key} of {name} differs"


def _mean_loss(per_rank: list[dict], case: str, i: int) -> float:
    return sum(r[case]["losses"][i] for r in per_rank) / len(per_rank)


def test_save_on_two_resume_on_one_and_back(tmp_path: Path) -> None:
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    t5_dir = str(make_tiny_t5(tmp_path / "t5", d_model=32))
    root = str(tmp_path / "runs")
    # 2 ranks: step 1 (saved as iteration 1), step 2
    two = run_ranks(_worker, 2, tmp_path / "a", t5_dir, root, None, 2)
    # 1 rank from iteration 1: step 2 (saved as iteration 2), step 3
    one = run_ranks(_worker, 1, tmp_path / "b", t5_dir, root, 1, 2)
    # 2 ranks from iteration 2: step 3
    back = run_ranks(_worker, 2, tmp_path / "c", t5_dir, root, 2, 1)
    for case in CASES:
        first, (single,), second = [r[case] for r in two], [r[case] for r in one], [r[case] for r in back]
        assert single["universal"] and all(r["universal"] for r in second)
        # 2 -> 1: state restored exactly, the sampler at 2 x 1 consumed samples, step 2 as on 2 ranks
        for r in first:
            _assert_equal_views(r["saved"], first[0]["saved"], f"{case}: ranks disagree")
        _assert_equal_views(single["resumed"], first[0]["saved"], f"{case}: 2 -> 1 resume")
        assert single["position"] == {"epoch": 0, "offset": 2}
        assert single["losses"][0] == pytest.approx(_mean_loss(two, case, 1), rel=1e-6, abs=0)
        # 1 -> 2: the same, from what the single rank saved
        for rank, r in enumerate(second):
            _assert_equal_views(r["resumed"], single["saved"], f"{case}: 1 -> 2 resume, rank {rank}")
            assert r["position"] == {"epoch": 0, "offset": 2}
        assert _mean_loss(back, case, 0) == pytest.approx(single["losses"][1], rel=1e-6, abs=0)
        # the losses moved: a resume that silently restarted from fresh weights would not match above
        assert single["losses"][0] != first[0]["losses"][0]
