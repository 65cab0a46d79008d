"""Run a decoder call with a time limit, so one hanging file cannot stall a loader worker.

The call runs in a daemon thread; if it does not finish in time we give up on it and raise
`TimeoutError`. A thread cannot be killed, so a truly hung decoder thread lingers until the
process exits: decord calls into C through ctypes, which releases the GIL, so the lingering
thread does not block the worker that moves on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_with_timeout(fn: Callable[[], T], timeout_s: float | None) -> T:
    """`fn()`, or TimeoutError after `timeout_s` seconds (None or <= 0: no limit, same thread)."""
    if timeout_s is None or timeout_s <= 0:
        return fn()
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the caller's thread below
            result["error"] = err

    thread = threading.Thread(target=run, name="decode-with-timeout", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"gave up after {timeout_s:g} s")
    if "error" in result:
        # No reference cycles through the error: its traceback holds the frames of run() and of
        # this function, so neither may keep holding the error (dict entry, local). A cycle would
        # keep the failed decoder alive until a garbage collection, which can then happen in a
        # forked DataLoader worker, where freeing the decoder crashes the worker.
        error = result.pop("error")
        try:
            raise error  # type: ignore[misc]
        finally:
            del error
    return result.pop("value")  # type: ignore[return-value]
