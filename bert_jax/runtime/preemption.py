"""Preemption: a SIGTERM (spot GPUs, preemptible TPUs) or a Ctrl-C ends the run cleanly at the next step
boundary. A second Ctrl-C stops at once (the newest checkpoint is then what survives, as after a SIGKILL).

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
        self._previous_handlers = {}
        if not self._multi_process:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        del frame
        self._notified = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        logging.warning("%s received: saving a checkpoint after the current step, then exiting%s.", name,
                        " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")
        if signum == signal.SIGINT:  # the second Ctrl-C is Python's own KeyboardInterrupt
            signal.signal(signal.SIGINT, self._previous_handlers.get(signal.SIGINT, signal.default_int_handler))

    def should_stop(self, step: int) -> bool:
        if not self._multi_process:
            return self._notified
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the preemption service is off: nothing to watch
            return False

    def close(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}


_KILL_ENV = "BERT_JAX_TEST_KILL_AT"


def kill_if_test_asks(step: int, moment: str) -> None:
    """Test hook, not for real runs: SIGKILLs this process when $BERT_JAX_TEST_KILL_AT is `<step>:<moment>`.

    Moments: 'step' (the step's metrics are written, its checkpoint is not) and 'save' (its asynchronous
    save has started but Orbax has not finalised it).
    """
    if os.environ.get(_KILL_ENV) == f"{step}:{moment}":
        os.kill(os.getpid(), signal.SIGKILL)
