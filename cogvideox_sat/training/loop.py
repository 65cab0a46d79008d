"""The training loop: micro-batches, DeepSpeed backward/step, logging, validation, checkpoints."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from cogvideox_sat import distributed
from cogvideox_sat.id_token import caption_batch
from cogvideox_sat.training.checkpoint import save_checkpoint
from cogvideox_sat.training.metrics import MetricsLogger
from cogvideox_sat.training.preemption import EXIT_SAVED_ON_SIGNAL, SignalWatch, StoppedOnSignal, signal_name
from cogvideox_sat.training.reshard import gather_rng_states
from cogvideox_sat.training.rng import capture_rng_state
from cogvideox_sat.training.validation import move_batch, save_validation_samples, validation_loss


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run is diverging."""


@dataclass
class LoopConfig:
    train_iters: int
    log_interval: int
    save_interval: Optional[int]
    eval_interval: Optional[int]
    eval_iters: int
    exit_interval: Optional[int]
    max_nonfinite_in_row: int = 10
    keep_last: Optional[int] = None
    trainable_only: bool = True
    id_token: Optional[str] = None  # in front of every training caption

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LoopConfig":
        return cls(
            train_iters=args.train_iters,
            log_interval=args.log_interval,
            save_interval=args.save_interval,
            eval_interval=args.eval_interval,
            eval_iters=args.eval_iters,
            exit_interval=args.exit_interval,
            max_nonfinite_in_row=args.max_nonfinite_steps,
            keep_last=args.keep_last_checkpoints,
            trainable_only=not args.save_frozen_weights,
            id_token=args.id_token,
        )


@dataclass
class LoopState:
    iteration: int = 0
    nonfinite_in_row: int = 0
    first_nonfinite: Optional[int] = None  # iteration of the first of the current run of non-finite losses
    skipped: dict[str, int] = field(default_factory=lambda: {"nonfinite": 0})
    last_saved: Optional[int] = None  # iteration of the checkpoint `latest` names (saved or resumed)


def _all_finite(loss: torch.Tensor) -> bool:
    """Agree across ranks, so every rank skips the same micro-batch (else collectives hang)."""
    return distributed.all_true(bool(torch.isfinite(loss.detach()).all()), loss.device)


def _mean_across_ranks(value: float, device: torch.device) -> float:
    return distributed.mean_over_ranks(value, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(ds_engine: Any, stream: Any, device: torch.device, iteration: int, state: LoopState, cfg: LoopConfig) -> float:
    """One optimizer step = gradient_accumulation_steps finite micro-batches; returns the mean loss.

    A micro-batch whose loss is NaN/Inf gets no backward: it is dropped with a warning and the next
    batch takes its place. After `max_nonfinite_in_row` such batches in a row the run stops, naming
    the iteration of the first (no checkpoint is written: `latest` stays the last good one). An
    fp16 step DeepSpeed's loss scaler skips for overflowing gradients has a finite loss: it is
    counted apart (`skipped["fp16_overflow"]`) and never stops the run.
    """
    step = iteration + 1  # the number logs and checkpoints give this step
    losses = []
    while len(losses) < ds_engine.gradient_accumulation_steps():
        batch = caption_batch(move_batch(next(stream), device), cfg.id_token)
        batch["global_step"] = iteration
        loss, _ = ds_engine.module.shared_step(batch)
        if not _all_finite(loss):
            if state.nonfinite_in_row == 0:
                state.first_nonfinite = step
            state.nonfinite_in_row += 1
            state.skipped["nonfinite"] += 1
            print(f"warning: iteration {step}: non-finite loss ({float(loss)}); batch skipped, no update", flush=True)
            if state.nonfinite_in_row >= cfg.max_nonfinite_in_row:
                raise NonFiniteLossError(
                    f"{state.nonfinite_in_row} non-finite losses in a row, the first at iteration {state.first_nonfinite}: "
                    "the run diverged and was stopped without saving. Lower the learning rate, use bf16 instead of "
                    "fp16, or resume from the last good checkpoint (`latest`)."
                )
            continue
        state.nonfinite_in_row = 0
        state.first_nonfinite = None
        ds_engine.backward(loss)
        ds_engine.step()
        losses.append(float(loss.detach()))
    if not getattr(ds_engine, "was_step_applied", lambda: True)():
        state.skipped["fp16_overflow"] = state.skipped.get("fp16_overflow", 0) + 1
    return sum(losses) / len(losses)


def precision_record(ds_engine: Any) -> dict[str, float]:
    """fp16 loss scaling: the current loss scale and the optimizer steps skipped for overflow
    (DeepSpeed's count, which its checkpoints carry across a resume)."""
    if not ds_engine.fp16_enabled():
        return {}
    record: dict[str, float] = {"overflow_skipped": int(ds_engine.skipped_steps)}
    optimizer = ds_engine.optimizer
    # ZeRO-1/2: `cur_scale`; ZeRO-3: `loss_scale`; DeepSpeed's ZeRO-0 fp16 optimizer: its loss_scale_config
    holders = (optimizer, getattr(optimizer, "loss_scale_config", None))
    scale = next((getattr(h, a) for h in holders for a in ("cur_scale", "loss_scale") if h is not None and isinstance(getattr(h, a, None), (int, float, torch.Tensor))), None)
    if scale is not None:
        record["loss_scale"] = float(scale)
    return record


def _data_skips() -> dict[str, int]:
    """Bad-input counts of this process's datasets and their loader workers, by reason."""
    from cogvideox_sat.data import skip_counts

    return {k: v for k, v in skip_counts().items() if v}


def _due(iteration: int, interval: Optional[int]) -> bool:
    return bool(interval) and iteration % interval == 0


def run_loop(
    ds_engine: Any,
    stream: Any,
    valid_stream: Optional[Any],
    args: argparse.Namespace,
    cfg: LoopConfig,
    state: LoopState,
    run_dir: Path,
    logger: MetricsLogger,
    device: torch.device,
    data_state: Callable[[], dict[str, Any]],
    ema: Optional[Any] = None,
    signals: Optional[SignalWatch] = None,
) -> LoopState:
    """Train from state.iteration to cfg.train_iters (or exit_interval more iterations).

    `signals`: after each step, if any rank received a stop signal, every rank saves this
    iteration and StoppedOnSignal is raised (the caller exits with EXIT_SAVED_ON_SIGNAL).
    """
    stop_at = cfg.train_iters
    if cfg.exit_interval:
        stop_at = min(stop_at, state.iteration + cfg.exit_interval)
    is_main = distributed.is_rank0()

    def checkpoint() -> None:
        rng = capture_rng_state()
        client = {
            "rng": rng,
            "rng_per_rank": gather_rng_states(rng),  # each rank's stream, for an exact multi-process resume
            "data": data_state(),
            "data_parallel_size": distributed.get_data_parallel_world_size(),  # to remap `data` on another count
            "skipped": dict(state.skipped),
        }
        start = time.perf_counter()
        path = save_checkpoint(ds_engine, run_dir, state.iteration, client, cfg.keep_last, cfg.trainable_only, ema)
        state.last_saved = state.iteration
        if is_main:
            print(f"saved checkpoint {path} ({time.perf_counter() - start:.2f} s)", flush=True)

    def stop_if_signalled() -> None:
        signum = signals.agreed(device) if signals is not None else 0
        if not signum:
            return
        if state.last_saved != state.iteration:
            checkpoint()
        message = (f"{signal_name(signum)} received: checkpoint {run_dir / str(state.iteration)} holds iteration "
                   f"{state.iteration}; exiting with code {EXIT_SAVED_ON_SIGNAL} (continue with --resume {run_dir})")
        if is_main:
            print(message, flush=True)
        raise StoppedOnSignal(message)

    while state.iteration < stop_at:
        start = time.perf_counter()
        loss = train_step(ds_engine, stream, device, state.iteration, state, cfg)
        if ema is not None and ds_engine.was_step_applied():  # an fp16 overflow step leaves the EMA alone
            ema.update()
        _sync(device)
        state.iteration += 1
        step_s = time.perf_counter() - start
        if _due(state.iteration, cfg.log_interval) or state.iteration == stop_at:
            lr = ds_engine.get_lr()[0]
            loss = _mean_across_ranks(loss, device)
            record = {"loss": loss, "lr": lr, "step_s": round(step_s, 4)}
            record.update(precision_record(ds_engine))
            if ema is not None:
                record["ema_updates"] = ema.num_updates
            if device.type == "cuda":
                record["max_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            skipped = {**_data_skips(), **{k: v for k, v in state.skipped.items() if v}}
            logger.log(state.iteration, record, skipped)
            if is_main:
                note = f" skipped {' '.join(f'{k}={v}' for k, v in skipped.items())}" if skipped else ""
                print(f"iteration {state.iteration}/{cfg.train_iters} loss {loss:.6f} lr {lr:.3e} step {step_s:.2f}s{note}", flush=True)
            if not math.isfinite(loss):
                raise NonFiniteLossError(f"iteration {state.iteration}: mean loss is {loss}")
        stop_if_signalled()
        if valid_stream is not None and _due(state.iteration, cfg.eval_interval):
            evaluate(ds_engine.module, valid_stream, args, cfg, run_dir, state.iteration, logger, device)
        if _due(state.iteration, cfg.save_interval):
            checkpoint()
    if args.save and state.last_saved != state.iteration:
        checkpoint()
    return state


def evaluate(engine: Any, valid_stream: Any, args: argparse.Namespace, cfg: LoopConfig, run_dir: Path, iteration: int, logger: MetricsLogger, device: torch.device) -> None:
    """Validation loss on every rank; then every rank samples its next validation batch's prompts
    and rank 0 writes and logs them all (validation.save_validation_samples)."""
    was_training = engine.training
    engine.eval()
    rng = capture_rng_state()  # validation must not change the training run's random stream
    try:
        loss = _mean_across_ranks(validation_loss(engine, valid_stream, cfg.eval_iters, device, cfg.id_token), device)
        logger.log(iteration, {"val_loss": loss})
        batch = move_batch(next(valid_stream), device)
        paths = save_validation_samples(engine, batch, args, run_dir, iteration, logger)
        if paths:
            print(f"validation at {iteration}: loss {loss:.6f}; {len(paths)} files in {run_dir / 'samples' / f'iter_{iteration:06d}'}", flush=True)
    finally:
        from cogvideox_sat.training.rng import restore_rng_state

        restore_rng_state(rng)
        engine.train(was_training)
