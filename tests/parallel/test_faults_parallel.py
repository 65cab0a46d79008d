"""A full disk on one of two gloo processes (real DeepSpeed ZeRO-2 save, torch.save patched to raise
ENOSPC for rank 1's optimizer partition): both ranks stop with the one-line DiskFullError, none
hangs, the partial tag folder is gone and `latest` still names the intact previous checkpoint."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch

from _parallel_testkit import run_ranks


def _worker(rank: int, world: int, root: str) -> dict[str, Any]:
    import deepspeed

    from cogvideox_sat.training.checkpoint import save_checkpoint
    from cogvideox_sat.training.disk_space import DiskFullError
    from cogvideox_sat.training.main import optimizer_config, param_groups

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
    ds_engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model), config=optimizer_config(config, torch.device("cpu")))
    ds_engine.backward(ds_engine(torch.randn(1, 8)).sum())
    ds_engine.step()
    save_checkpoint(ds_engine, root, 1, {})

    real = torch.save

    def full_on_rank1(obj, f, *args, **kwargs):
        if rank == 1 and "optim_states" in str(f):
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    torch.save = full_on_rank1
    try:
        save_checkpoint(ds_engine, root, 2, {})
        return {"error": None}
    except DiskFullError as err:
        return {"error": str(err)}
    finally:
        torch.save = real


def test_full_disk_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    from cogvideox_sat.training.checkpoint import choose_resume_tag, read_latest
    from cogvideox_sat.training.manifest import check_tag

    results = run_ranks(_worker, 2, tmp_path / "out", str(tmp_path / "run"))
    for r in results:
        assert r["error"] is not None and "\n" not in r["error"]
        assert f"no space left in {tmp_path / 'run'} " in r["error"] and "`latest` still names 1" in r["error"]
    assert not (tmp_path / "run" / "2").exists() and read_latest(tmp_path / "run") == "1"
    assert check_tag(tmp_path / "run" / "1").intact and choose_resume_tag(tmp_path / "run") == "1"
