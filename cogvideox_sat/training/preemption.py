"""Save on signal: a preempted job saves at the step it reached and exits with a requeue code.

SLURM, Kubernetes and torchrun send SIGTERM (interactive users SIGINT, some schedulers SIGUSR1)
some seconds before they kill a job. The handler only records the signal; the training loop asks
`agreed()` once per step, which all-reduces one integer, so a signal that reached any rank makes
every rank save the same iteration together and leave with `EXIT_SAVED_ON_SIGNAL`.

A second signal ends the process at once with that signal's default action: the checkpoint
being written is never named by `latest` (the save is atomic), so the previous one still loads.
Data-loader workers ignore the signals (`ignore_stop_signals`, their `worker_init_fn`): a
scheduler signals the whole process group, and a worker dying of it would end the run before
its parent saves. Other forked children inherit the handler, which ignores them too.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any, Optional

from cogvideox_sat import distributed

# sysexits.h EX_TEMPFAIL, "temporary failure, try again": distinct from a crash (1), a bad
# config (2) and a death by signal (128 + n); schedulers can requeue on it
EXIT_SAVED_ON_SIGNAL = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StoppedOnSignal(Exception):
    """The run saved a checkpoint after a signal and must exit with EXIT_SAVED_ON_SIGNAL."""

    exit_code = EXIT_SAVED_ON_SIGNAL


class SignalWatch:
    """Records SIGTERM/SIGINT/SIGUSR1 while installed (a context manager; no-op when disabled)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.received = 0  # signal number of the first signal, 0 for none
        self._owner = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalWatch":
        if self.enabled:
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if os.getpid() != self._owner:
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if os.getpid() != self._owner:
            return  # a forked data-loader worker: the training process saves and stops it
        if self.received:
            # second signal: stop now; `latest` still names the last complete checkpoint
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum

    def agreed(self, device: Any) -> int:
        """The signal any rank received (0: none); every rank must call this at the same step."""
        if not self.enabled:
            return 0
        return distributed.max_over_ranks(self.received, device)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """In a data-loader worker: the stop signals are for the training process, not for it."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
