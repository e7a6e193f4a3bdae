"""Work that process 0 does once for everyone, with its outcome told to the other processes.

A device barrier (`multihost_utils.sync_global_devices`) after process 0's work hangs the other processes
forever when process 0 raises before reaching it. Instead process 0 publishes "ok" or its error message
under a key of the jax.distributed key-value store, and the others wait for that key, so a bad corpus
ends every process with the same readable error.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TypeVar

import jax
from absl import logging

# The coordination service's key-value store has no public wrapper in jax 0.10.
from jax._src import distributed

from bert_jax.config import InputError

T = TypeVar("T")

_OK = "ok"
_ERROR_PREFIX = "error: "
# Preparing a large corpus can take hours; past a day process 0 is surely stuck, not slow.
WAIT_SECONDS = 24 * 3600
# The waiting processes log once per chunk, so a slow preparation is visibly not a hang.
_CHUNK_SECONDS = 600
_call_index = itertools.count()  # every process calls in the same order, so the keys match across processes


def process_zero_first(work: Callable[[], T], what: str, wait_seconds: float = WAIT_SECONDS) -> tuple[T | None, bool]:
    """Runs `work()` on process 0 and tells the others how it went.

    Returns (process 0's result or None elsewhere, whether this process ran `work`). On process 0 an
    exception from `work` is published and re-raised; the other processes raise InputError with process
    0's message once it is published, or after `wait_seconds` without word. With one process it only
    calls `work()`.
    """
    if jax.process_count() == 1:
        return work(), True
    client = distributed.global_state.client
    key = f"bert_jax/process_zero_first/{next(_call_index)}/{what.replace(' ', '_')}"
    if jax.process_index() == 0:
        try:
            result = work()
        except BaseException as e:
            client.key_value_set(key, _ERROR_PREFIX + _one_line(e), allow_overwrite=True)
            raise
        client.key_value_set(key, _OK, allow_overwrite=True)
        return result, True
    status = _wait_for(client, key, what, wait_seconds)
    if status != _OK:
        raise InputError(f"process 0 failed to {what}: {status.removeprefix(_ERROR_PREFIX)}")
    return None, False


def _wait_for(client, key: str, what: str, wait_seconds: float) -> str:
    """The value of `key` once process 0 sets it, re-asking every chunk; InputError after `wait_seconds`."""
    waited = 0.0
    while waited < wait_seconds:
        chunk = min(_CHUNK_SECONDS, wait_seconds - waited)
        try:
            return client.blocking_key_value_get(key, int(chunk * 1000))
        except jax.errors.JaxRuntimeError as e:
            if "DEADLINE_EXCEEDED" not in str(e):  # the coordinator is gone, not merely slow
                raise InputError(f"process {jax.process_index()} lost the coordinator while waiting for process 0 "
                                 f"to {what}: {_one_line(e)}; see process 0's log for its error.") from e
        waited += chunk
        logging.info("process %d: still waiting for process 0 to %s (%.0f minutes so far)", jax.process_index(),
                     what, waited / 60)
    raise InputError(f"process 0 did not {what} within {wait_seconds / 3600:g} hours; see process 0's log, or "
                     "prepare the data with one process first (the caches in the workdir are then reused).")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, InputError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
