"""Preemption: a SIGTERM (spot GPUs, preemptible TPUs) ends the run cleanly at the next step boundary.

The trainer asks `should_stop(step)` after every step; when it says so, it writes a checkpoint, waits
until it is durable and returns, so the process exits 0 and the same command resumes. With several
processes every host must stop at the same step: JAX's preemption sync manager (it listens for SIGTERM
itself) picks that step, so no handler of ours is installed there.

A SIGKILL (out of memory, a lost machine) gives no notice: there the newest checkpoint is all that
survives, and `kill_if_test_asks` lets tests die at chosen points to check that it is enough.
"""

from __future__ import annotations

import os
import signal

import jax
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Turns a preemption notice into `should_stop(step) == True` at a step every process agrees on."""

    def __init__(self):
        self._notified = False
        self._multi_process = jax.process_count() > 1
        self._previous_handler = None
        if not self._multi_process:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self._notified = True
        logging.warning("SIGTERM received: saving a checkpoint after the current step, then exiting.")

    def should_stop(self, step: int) -> bool:
        if not self._multi_process:
            return self._notified
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the preemption service is off: nothing to watch
            return False

    def close(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


_KILL_ENV = "BERT_JAX_TEST_KILL_AT"


def kill_if_test_asks(step: int, moment: str) -> None:
    """Test hook, not for real runs: SIGKILLs this process when $BERT_JAX_TEST_KILL_AT is `<step>:<moment>`.

    Moments: 'step' (the step's metrics are written, its checkpoint is not) and 'save' (its asynchronous
    save has started but Orbax has not finalised it).
    """
    if os.environ.get(_KILL_ENV) == f"{step}:{moment}":
        os.kill(os.getpid(), signal.SIGKILL)
