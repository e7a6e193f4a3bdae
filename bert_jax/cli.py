"""What every entrypoint does around its work: reject stray arguments, log at INFO without library
chatter, and turn a user error (InputError, a bad flag, an unwritable or full disk) into one readable
line and exit status 1."""

from __future__ import annotations

import difflib
import errno
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

import ml_collections
from absl import app, flags, logging
from ml_collections.config_flags import (
    config_flags,  # the module: its file parser is not re-exported
)

from bert_jax.config import InputError, unknown_key_message
from bert_jax.runtime import parallel, reporting

T = TypeVar("T")

# OSErrors that mean "this path cannot be written (or read) here", not a bug: said in one line.
_PATH_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "read-only file system", errno.ENOTDIR: "a parent is a file, not a directory",
                errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                # os.makedirs(..., exist_ok=True) where a part of the path is a file
                errno.EEXIST: "it exists and is not a directory"}


def run(argv, work: Callable[[], T]) -> T:
    """Calls `work()` for an absl `main(argv)`; an InputError ends the process with `error: <message>`."""
    refuse_extra_arguments(argv)
    logging.set_verbosity(logging.INFO)
    reporting.quiet_library_logs()
    try:
        return work()
    except InputError as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        if e.errno not in _PATH_ERRNOS:
            raise
        sys.exit(f"error: {path_error_message(e)}")


def refuse_extra_arguments(argv) -> None:
    """Words after the flags (a value split at a space, a flag without its dashes) end the process in one line."""
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every option is a flag written --name=value (quote a "
                 "value with spaces): see --helpfull.")


def path_error_message(error: OSError) -> str:
    """One line for an OSError about a path: what happened, where, and what to do."""
    where = error.filename or "the output directory"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{_PATH_ERRNOS[error.errno]} writing {where}; free some space or point --workdir/--output at "
                "a larger disk, then run the same command again (a pretraining run resumes from its last "
                "complete checkpoint, a corpus preparation from its complete shards).")
    return (f"cannot use {where}: {_PATH_ERRNOS[error.errno]}; choose a --workdir/--output directory you can "
            "write to (or fix the permissions of that path).")


def refuse_empty(*names: str) -> None:
    """Path flags given as `--workdir=` (an unset shell variable) are refused while parsing, in one line,
    instead of reaching os.makedirs('') as a FileNotFoundError traceback."""
    for name in names:
        flags.register_validator(name, lambda value: value is None or bool(str(value).strip()),
                                 message=f"--{name} is empty; give a path (an unset shell variable?)")


def define_distributed_flags() -> Callable[[], None]:
    """Defines --coordinator_address, --num_processes and --process_id (multi-process runs; JAX's environment
    variables and TPU pods otherwise) and returns the function that starts jax.distributed from them."""
    coordinator = flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for multi-process runs "
                                      "(default: $JAX_COORDINATOR_ADDRESS; TPU pods find it themselves).")
    num_processes = flags.DEFINE_integer("num_processes", 0, "Number of processes (default: $JAX_NUM_PROCESSES).")
    process_id = flags.DEFINE_integer("process_id", -1, "This process's index (default: $JAX_PROCESS_ID).")

    def initialize() -> None:
        parallel.initialize_distributed(coordinator.value, num_processes.value, process_id.value)

    return initialize


def run_app(main: Callable, *, huge_pages: bool = False) -> None:
    """`absl.app.run(main)`, with mistakes in the flags (above all in --config overrides) said in one line.

    `huge_pages` (the commands that run XLA steps: pretrain, distill, finetune, benchmark): first restart
    the process once with glibc's huge-page malloc, see `reexec_with_huge_pages`."""
    if huge_pages:
        reexec_with_huge_pages()
    app.run(main, flags_parser=parse_flags)


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
NO_REEXEC_ENV = "BERT_JAX_NO_REEXEC"  # set to 1: never restart the command (keep glibc's malloc as it is)
REEXEC_MARK_ENV = "BERT_JAX_REEXECED"  # set in the restarted process, so it never restarts again
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def reexec_with_huge_pages(environ=None) -> None:
    """On a Linux machine running JAX on CPU, replaces this process by the same command (interpreter,
    its options and argv as given, so the exit status is the command's) with GLIBC_TUNABLES set to
    glibc.malloc.hugetlb=1 added to the tunables already there.

    Why: XLA's CPU runtime allocates fresh buffers every step, and glibc's default malloc gives them
    4 KiB pages: 250k-570k page faults per BERT-mini step. Transparent huge pages cut that to ~1.5k and
    make steps ~1.2-1.3x faster (benchmarks/README.md), but glibc reads the setting only when a process
    starts. Nothing happens when the tunable is already set, when this process is the restarted one, with
    BERT_JAX_NO_REEXEC=1, off Linux, or where JAX would not run on the CPU (JAX_PLATFORMS naming another
    platform, or an accelerator plugin installed).
    """
    environ = os.environ if environ is None else environ
    if (sys.platform != "linux" or environ.get(NO_REEXEC_ENV, "") not in ("", "0") or environ.get(REEXEC_MARK_ENV)
            or "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", "") or not _runs_on_cpu(environ)):
        return
    tunables = ":".join(t for t in (environ.get("GLIBC_TUNABLES", ""), HUGE_PAGES_TUNABLE) if t)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**environ, "GLIBC_TUNABLES": tunables, REEXEC_MARK_ENV: "1"})


def _runs_on_cpu(environ) -> bool:
    """Whether JAX will run on the CPU, told without starting it (that would cost the time saved)."""
    platforms = environ.get("JAX_PLATFORMS", "") or environ.get("JAX_PLATFORM_NAME", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing; an unknown config key, a value of the wrong type or a broken config file
    ends the process with one `error: ...` line instead of a traceback."""
    unreadable = _unreadable_config_file(argv)
    if unreadable:  # ml_collections would defer this until the config is first used, as a traceback
        sys.exit(f"error: {unreadable}")
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - absl raises flags.Error, ml_collections Attribute/Key/TypeError
        message = _unknown_override(argv) or _config_file_error(e, argv) or _flag_error_line(e)
    sys.exit(f"error: {message}")


def _config_file_flags(argv: list[str]) -> list[tuple[str, str]]:
    """(flag name, file path) of each config-file flag given in argv (a `:args` suffix dropped)."""
    given = []
    for name, flag in flags.FLAGS._flags().items():  # absl has no public iterator over flag objects
        path = _config_file(name, argv) if isinstance(flag.parser, config_flags.ConfigFileFlagParser) else None
        if path and (name, path) not in given:
            given.append((name, path))
    return [(name, path if os.path.exists(path) or ":" not in path else path.split(":", 1)[0])
            for name, path in given]


def _unreadable_config_file(argv: list[str]) -> str | None:
    for name, path in _config_file_flags(argv):
        if os.path.isdir(path):
            return f"--{name}={path} is a directory, not a config file; give a file such as configs/bert_tiny.py."
        if not os.path.isfile(path):
            folder = os.path.dirname(path) or "."
            close = difflib.get_close_matches(os.path.basename(path), sorted(os.listdir(folder)), n=1, cutoff=0.85) \
                if os.path.isdir(folder) else []
            hint = f"did you mean {os.path.join(os.path.dirname(path), close[0])}?" if close else \
                "give the path of a config file such as configs/bert_tiny.py."
            return f"--{name}={path}: no such config file (looked from {os.getcwd()}); {hint}"
    return None


def _config_file_error(error: Exception, argv: list[str]) -> str | None:
    """For a config file that does not run (a syntax error, an exception in get_config, no get_config):
    the file, its line and the exception in one line."""
    for _, path in _config_file_flags(argv):
        base = os.path.basename(path)
        if isinstance(error, SyntaxError) and os.path.basename(error.filename or "") == base:
            return (f"config file {path} line {error.lineno} is not valid Python: SyntaxError: {error.msg}; "
                    "fix that line.")
        if isinstance(error, AttributeError) and "get_config" in str(error):
            return (f"config file {path} defines no get_config(); a config file is Python with a get_config() "
                    "that returns the ConfigDict, as configs/bert_tiny.py does.")
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
                 if os.path.basename(frame.filename) == base]
        if lines:
            hint = " (each field takes values of the type of its default)" if isinstance(error, TypeError) else ""
            return f"config file {path} line {lines[-1]} failed: {type(error).__name__}: {error}; fix that line{hint}."
    return None


_OVERRIDE = re.compile(r"^--?(\w+)\.([\w.]+)(=|$)")


def _config_file(name: str, argv: list[str]) -> str | None:
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith((f"--{name}=", f"-{name}=")):
            return arg.split("=", 1)[1]
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _load_config_flag(name: str, argv: list[str]) -> tuple[ml_collections.ConfigDict, str] | None:
    """(config, file) of config flag `name`, loaded again from argv (absl has not stored it when parsing fails)."""
    path = _config_file(name, argv)
    if path is None:
        return None
    try:
        config = config_flags.ConfigFileFlagParser(name, lock_config=False).parse(path)
    except Exception:  # noqa: BLE001 - a broken file is reported by absl's own error
        return None
    return (config, path) if isinstance(config, ml_collections.ConfigDict) else None


def _unknown_override(argv: list[str]) -> str | None:
    """For `--config.a.b=...` naming a field the config lacks: that key and the closest known ones."""
    for arg in argv[1:]:
        match = _OVERRIDE.match(arg)
        loaded = _load_config_flag(match.group(1), argv) if match else None
        if loaded is None:
            continue
        config, config_file = loaded
        node = config
        for part in match.group(2).split("."):
            if isinstance(node, ml_collections.ConfigDict) and part in node:
                node = node[part]
                continue
            path = f"{match.group(1)}.{match.group(2)}"
            return unknown_key_message(path, config, f"{config_file} and --helpfull", flag_prefix="--",
                                       what="on the command line is not a field of the config")
    return None


def _flag_error_line(error: Exception) -> str:
    """The gist of a flag-parsing error in one line, with where to look and what to do."""
    text = str(error).strip()
    file_match = re.search(r"flag --(\w+)=(\S+): Error whilst parsing config file", text)
    if file_match:  # the config file raised: keep its line number and the exception's last line
        config_file = file_match.group(2)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        where = [m.group(1) for m in (re.search(rf'File "[^"]*{re.escape(config_file.split(":")[0])}", line (\d+)',
                                                line) for line in lines) if m]
        at = f" line {where[-1]}" if where else ""
        return (f"config file {config_file}{at} failed: {lines[-1]}; fix that line (each field takes values of "
                "the type of its default).")
    first = text.splitlines()[0] if text else type(error).__name__
    override = re.match(r"flag --(\w+)\.([\w.]+)=", first)
    if override:
        return f"{first}; give --{override.group(1)}.{override.group(2)} a value of the field's type."
    return f"{first}; see --helpfull for the flags."
