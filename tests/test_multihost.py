"""bert_jax.multihost.process_zero_first with a stand-in key-value store, as process 0 and as process 1.

The real 2-process run (process 0 failing, process 1 getting its message) is in test_distributed.py.
"""

import jax
import pytest

from bert_jax.config import InputError
from bert_jax.runtime import multihost


class _Store:
    """The two calls of jax's DistributedRuntimeClient that process_zero_first uses."""

    def __init__(self, fail_with=None):
        self.values, self.fail_with, self.waits_ms = {}, fail_with, []

    def key_value_set(self, key, value, allow_overwrite=False):
        self.values[key] = value

    def blocking_key_value_get(self, key, timeout_in_ms):
        self.waits_ms.append(timeout_in_ms)
        if key in self.values:
            return self.values[key]
        raise self.fail_with or jax.errors.JaxRuntimeError(f"DEADLINE_EXCEEDED: GetKeyValue() timed out with key: {key}")


@pytest.fixture
def as_process(monkeypatch):
    """as_process(index, store): the next calls run as process `index` of 2 with `store` as the client."""
    def become(index, store):
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda: index)
        monkeypatch.setattr(multihost.distributed.global_state, "client", store)
    return become


def _fail():
    raise InputError("corpus.txt has no documents")


def test_one_process_just_runs_the_work():
    assert multihost.process_zero_first(lambda: 7, "count") == (7, True)


def test_process_zero_publishes_success_and_the_others_go_on(as_process, monkeypatch):
    store = _Store()
    as_process(0, store)
    monkeypatch.setattr(multihost, "_call_index", iter(range(100)))
    assert multihost.process_zero_first(lambda: "built", "build") == ("built", True)
    monkeypatch.setattr(multihost, "_call_index", iter(range(100)))  # process 1 counts its calls from 0 too
    as_process(1, store)
    assert multihost.process_zero_first(_fail, "build") == (None, False)  # process 1 never runs the work


def test_process_zero_failure_reaches_the_others(as_process, monkeypatch):
    store = _Store()
    as_process(0, store)
    monkeypatch.setattr(multihost, "_call_index", iter(range(100)))
    with pytest.raises(InputError, match="^corpus.txt has no documents$"):
        multihost.process_zero_first(_fail, "prepare the data")
    monkeypatch.setattr(multihost, "_call_index", iter(range(100)))
    as_process(1, store)
    with pytest.raises(InputError, match="^process 0 failed to prepare the data: corpus.txt has no documents$"):
        multihost.process_zero_first(_fail, "prepare the data")


def test_other_exceptions_are_named_in_one_line(as_process, monkeypatch):
    store = _Store()
    as_process(0, store)
    monkeypatch.setattr(multihost, "_call_index", iter(range(100)))

    def broken():
        raise ValueError("bad\nfile")

    with pytest.raises(ValueError):
        multihost.process_zero_first(broken, "prepare the data")
    assert list(store.values.values()) == ["error: ValueError: bad file"]


def test_waiting_is_bounded_and_chunked(as_process, monkeypatch):
    store = _Store()
    as_process(1, store)
    monkeypatch.setattr(multihost, "_CHUNK_SECONDS", 2)
    with pytest.raises(InputError, match="process 0 did not prepare the data within"):
        multihost.process_zero_first(_fail, "prepare the data", wait_seconds=5)
    assert store.waits_ms == [2000, 2000, 1000]


def test_a_lost_coordinator_is_said_not_waited_for(as_process):
    store = _Store(fail_with=jax.errors.JaxRuntimeError("UNAVAILABLE: failed to connect to the coordinator"))
    as_process(1, store)
    with pytest.raises(InputError, match="lost the coordinator while waiting for process 0"):
        multihost.process_zero_first(_fail, "prepare the data")
    assert len(store.waits_ms) == 1
