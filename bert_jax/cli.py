"""What every entrypoint does around its work: reject stray arguments, log at INFO without library
chatter, and turn a user error (InputError) into one readable line and exit status 1."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from absl import app, logging

from bert_jax import reporting
from bert_jax.config import InputError

T = TypeVar("T")


def run(argv, work: Callable[[], T]) -> T:
    """Calls `work()` for an absl `main(argv)`; an InputError ends the process with `error: <message>`."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    reporting.quiet_library_logs()
    try:
        return work()
    except InputError as e:
        sys.exit(f"error: {e}")
