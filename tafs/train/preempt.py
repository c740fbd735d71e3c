"""Stopping a training job early without losing work: SIGTERM / SIGUSR1, and a wall-clock budget.

A signal only sets a flag; the trainer looks at it after each iteration, writes a checkpoint (atomically,
tafs.checkpoint) and raises ``Preempted``; the CLI then exits with ``PREEMPTED_EXIT`` so that the scheduler
(Snakemake's ``retries``) runs the job again, which resumes from that checkpoint. With ``max_runtime_min`` the
trainer stops the same way when the next iteration would end past the budget, so a run longer than a
partition's time limit finishes in several slices. Every slice trains at least one iteration.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable

log = logging.getLogger(__name__)

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again"; distinct from errors (1) and Python's SIGTERM death (143)
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Training stopped early with a checkpoint at ``iteration``; a re-run continues from it."""

    def __init__(self, iteration: int, reason: str):
        super().__init__(f"stopped at iteration {iteration} ({reason}); checkpoint written, re-run to continue")
        self.iteration, self.reason = iteration, reason


class StopRequest:
    """A context manager: while inside, SIGTERM / SIGUSR1 set ``signalled`` instead of killing the process
    (outside the main thread nothing is installed: Python delivers signals there only)."""

    def __init__(self, max_runtime_min: float | None = None):
        self.budget_s = None if max_runtime_min is None else 60.0 * max_runtime_min
        self.signalled: str | None = None
        self.start = time.monotonic()
        self.slowest = 0.0  # the longest iteration so far: the estimate of the next one
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = signal.Signals(signum).name
        log.warning("%s received: stopping after this iteration (a checkpoint is written first)", self.signalled)

    def __enter__(self) -> StopRequest:
        self.start = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def reason(self, iteration_s: float) -> str | None:
        """Why to stop now (after an iteration that took ``iteration_s``), or None to go on."""
        self.slowest = max(self.slowest, iteration_s)
        if self.signalled:
            return self.signalled
        elapsed = time.monotonic() - self.start
        if self.budget_s is not None and elapsed + self.slowest > self.budget_s:
            return f"max_runtime_min: {elapsed / 60:.2f} min used, the next iteration would pass the budget"
        return None


def agreed(reason: str | None, sum_scalars: Callable[[list[float]], list[float]]) -> str | None:
    """Every process stops together (collectives would hang otherwise): any process's reason stops all."""
    n = sum_scalars([1.0 if reason else 0.0])[0]
    return reason or ("another process stopped" if n > 0 else None)
