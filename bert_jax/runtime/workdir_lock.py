"""One writer per directory: an advisory lock that keeps two runs out of the same workdir.

Two pretraining runs in one workdir (started together, or the second while the first trains) write the
same checkpoint steps, append every metrics line twice and race on the corpus caches. Each command that
writes a run directory (pretraining, fine-tuning, corpus preparation) therefore holds
`fcntl.flock` on `<directory>/.bert_jax.lock` while it works. The kernel drops the lock when its process
ends, however it ends, so a killed run never blocks the next one. The file says who holds it (pid, host,
command, start time) so that a refused run can name the holder; a clean exit empties it, so content
found by the next holder means its owner died holding the lock, which is logged. (Exports need no
lock: each is built in a hidden sibling directory and renamed into place whole, see `atomic.directory`.)
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from absl import logging

# The only way to ask "several processes?" without starting JAX's backends (which a GPU run would allocate).
from jax._src import distributed

from bert_jax.config import InputError
from bert_jax.runtime import multihost

LOCK_NAME = ".bert_jax.lock"
# How long a refused run waits for the holder to write who it is (it writes right after taking the lock).
_DESCRIBE_SECONDS = 1.0


class _Held:
    """The open, flock-ed lock file of a directory."""

    def __init__(self, fd: int):
        self.fd = fd

    def release(self) -> None:
        """Empties the file before unlocking, so the next holder does not take this run for a dead one."""
        try:
            os.ftruncate(self.fd, 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


@contextlib.contextmanager
def workdir_lock(directory: str, what: str, *, flag: str = "--workdir") -> Iterator[None]:
    """Holds the lock of `directory` (created if missing) for the `with` block, or raises InputError.

    `what` ('pretraining', 'fine-tuning', 'export', 'corpus preparation') and `flag` (the option that named
    the directory) go into the messages. In a multi-process run only process 0 takes the lock; the other
    processes wait for its verdict and raise the same error, so every process of a run must enter this at
    the same point. Not reentrant: a second lock of the same directory in one process is refused too.
    """
    if distributed.global_state.client is None:  # one process: JAX's backends need not start for this
        held = _acquire(directory, what, flag)
    else:
        held, _ = multihost.process_zero_first(lambda: _acquire(directory, what, flag), f"lock its {flag[2:]}")
    try:
        yield
    finally:
        if held is not None:
            held.release()


def _acquire(directory: str, what: str, flag: str) -> _Held:
    """Takes the lock, or raises InputError naming its holder; a dead holder's lock is taken over, logged."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InputError(f"{flag} {directory} is a file; give a directory.")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.path.abspath(directory), LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise InputError(_refusal(os.path.dirname(path), what, flag, _holder(path))) from None
    held = _Held(fd)
    try:
        previous = _parse(os.pread(fd, 1 << 16, 0))
        if previous:
            logging.warning("took over the lock of %s from pid %s on %s (%s, started %s), which ended without "
                            "releasing it (killed or crashed)", os.path.dirname(path), previous.get("pid"),
                            previous.get("host"), previous.get("what"), previous.get("started"))
        _write_owner(fd, what)
    except BaseException:
        held.release()
        raise
    return held


def _write_owner(fd: int, what: str) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv), "what": what,
             "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
    os.fsync(fd)


def _parse(data: bytes) -> dict | None:
    try:
        owner = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _holder(path: str) -> dict | None:
    """Who holds the lock, as written in its file. Retried briefly: a holder writes its details only after
    taking the lock, so right then the file is empty or still names a dead predecessor."""
    deadline = time.monotonic() + _DESCRIBE_SECONDS
    while True:
        try:
            with open(path, "rb") as f:
                owner = _parse(f.read(1 << 16))
        except OSError:
            owner = None
        if owner and not _is_dead_here(owner) or time.monotonic() > deadline:
            return owner
        time.sleep(0.05)


def _is_dead_here(owner: dict) -> bool:
    """Whether `owner` names a process of this host that no longer exists."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _refusal(directory: str, what: str, flag: str, owner: dict | None) -> str:
    """The one line a refused run prints: the directory, who holds it, and what to do."""
    advice = f"wait for it to finish, stop it, or give another {flag}."
    if not owner:
        return f"cannot start {what} in {directory}: another process holds its lock {LOCK_NAME}; {advice}"
    host = str(owner.get("host"))
    where = (f"host {host}" if host == socket.gethostname() else
             f"host {host}, another machine (the directory is on a shared file system)")
    command = " ".join(str(owner.get("command", "?")).split())
    return (f"cannot start {what} in {directory}: {owner.get('what', 'another run')} by pid {owner.get('pid')} on "
            f"{where}, started {owner.get('started')}, holds its lock (command: {command}); {advice}")
