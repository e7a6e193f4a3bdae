"""Writes that a kill, a crash or a full disk cannot leave half done, for every file a later run reads.

A file is written under a unique hidden name in its own directory (`.NAME.<random>.tmp`), flushed and
fsynced, then renamed over its path with `os.replace`, which is atomic within a file system; the
directory is fsynced too, so the rename itself survives a power cut. A reader (a resumed run, a cache
check, another program) therefore sees the old content or the new one, never a truncated mix. If the
write raises (a full disk, a bug, Ctrl-C), the temporary is removed and the old file is untouched; a
SIGKILL can leave only the hidden temporary behind, never a damaged file under the real name.

A directory (an export) is filled under a hidden sibling name (`.NAME.<random>.partial`) and renamed to
its name when complete, so a directory under the output name is always a whole one. An OSError about
the file being written names the real path, so the CLI can say in one line which disk is full.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from typing import IO, Any, NoReturn

from absl import logging

from bert_jax.config import InputError

_FILE_SUFFIX = ".tmp"
_DIRECTORY_SUFFIX = ".partial"
_RANDOM_CHARS = 12
# fsync of a directory is refused by some file systems (and Windows); the rename has happened all the same.
_NO_DIRECTORY_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF)


def temporary_name(path: str, suffix: str = _FILE_SUFFIX) -> str:
    """A unique hidden sibling of `path`: same directory, hence same file system, so a rename is atomic."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex[:_RANDOM_CHARS]}{suffix}")


def fsync_directory(directory: str) -> None:
    """Makes a rename inside `directory` durable (the rename is in the directory, not in the file)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIRECTORY_FSYNC:
            raise
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(temporary: str, path: str) -> None:
    """Puts a complete file that someone else wrote at `temporary` (a library's trainer) under `path`."""
    try:
        _fsync_file(temporary)
        os.replace(temporary, path)
    except OSError as e:
        _raise_naming(e, path, temporary)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def remove(path: str) -> None:
    """Removes a temporary if it is there (cleanup must not hide the error that caused it)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _raise_naming(error: BaseException, path: str, temporary: str) -> NoReturn:
    """Raises `error`; an OSError about the temporary (or about no file) is raised as one naming the real
    path, so a full disk says which file it stopped."""
    if isinstance(error, OSError) and error.errno is not None and error.filename in (None, temporary):
        raise OSError(error.errno, error.strerror, path) from error
    raise error


def _keep_mode(fd: int, path: str) -> None:
    """A rewritten file keeps its permissions, as it would when opened with "w"; a new one gets the umask's."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(fd, stat.S_IMODE(os.stat(path).st_mode))


@contextlib.contextmanager
def writer(path: str, mode: str = "w") -> Iterator[IO[Any]]:
    """Yields a file ("w": UTF-8 text, "wb": bytes) that replaces `path` when the block ends without error.

    For content written piece by piece (a corpus, a predictions file); `write_text` and friends for content
    in memory. The directory of `path` must exist, as for `open`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic.writer writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    path = os.path.realpath(path)  # a symlink's target is rewritten, as open("w") would
    temporary = temporary_name(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        _keep_mode(fd, path)
        with os.fdopen(fd, mode, encoding=None if mode == "wb" else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as e:  # noqa: BLE001 - removed, then raised again
        remove(temporary)
        _raise_naming(e, path, temporary)
    fsync_directory(os.path.dirname(path))


def write_bytes(path: str, data: bytes) -> None:
    with writer(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    with writer(path) as f:
        f.write(text)


def write_json(path: str, obj: Any, **json_kwargs) -> None:
    """`json.dump(obj, f, **json_kwargs)` into a file that replaces `path` only once it is complete."""
    write_text(path, json.dumps(obj, **json_kwargs))


def remove_leftovers(path: str) -> None:
    """Deletes what killed earlier writes of `path` left beside it: hidden temporaries and partial
    directories (large for an export; a TensorBoard temporary would even be read as an event file).
    Only for a path that one process writes at a time: none of them can be in use."""
    directory, name = os.path.split(os.path.abspath(path))
    for suffix in (_FILE_SUFFIX, _DIRECTORY_SUFFIX):
        pattern = f".{glob.escape(name)}.{'[0-9a-f]' * _RANDOM_CHARS}{suffix}"
        for leftover in glob.glob(os.path.join(glob.escape(directory), pattern)):
            logging.warning("removing %s, left by an earlier write of %s that was killed", leftover, path)
            if os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                remove(leftover)


def _fsync_tree(root: str) -> None:
    """Flushes every file and directory under `root`, so the rename cannot reach the disk before them."""
    for directory, _, names in os.walk(root):
        for name in names:
            _fsync_file(os.path.join(directory, name))
        fsync_directory(directory)


def _check_free(path: str) -> None:
    if os.path.exists(path) and not (os.path.isdir(path) and not os.listdir(path)):
        raise InputError(f"{path} already exists and is not an empty directory; give an output path that does "
                         "not exist yet (or delete it).")


@contextlib.contextmanager
def directory(path: str) -> Iterator[str]:
    """Yields a new hidden sibling directory of `path` to fill; it becomes `path` when the block ends
    without error, and is deleted when it raises. `path` must not exist or be an empty directory
    (InputError otherwise, before anything is written). One writer per path: a partial sibling left by a
    killed earlier attempt is deleted first."""
    path = os.path.abspath(path)
    _check_free(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    remove_leftovers(path)
    partial = temporary_name(path, _DIRECTORY_SUFFIX)
    os.mkdir(partial)
    try:
        yield partial
        _fsync_tree(partial)
        os.rename(partial, path)  # replaces an empty directory; refuses a non-empty one
    except BaseException as e:  # noqa: BLE001 - removed, then raised again
        shutil.rmtree(partial, ignore_errors=True)
        _raise_naming(e, path, partial)
    fsync_directory(parent)
