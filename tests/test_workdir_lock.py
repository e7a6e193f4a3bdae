"""The workdir lock between real processes: a second holder is refused with one line naming the first, a
SIGKILLed holder's lock is taken over with a warning, and pretraining, fine-tuning and corpus
preparation each refuse a directory another process holds.
"""

import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest
from test_multihost import _Store
from test_reliability import _command, _env

from bert_jax import config as pretrain_config
from bert_jax.config import InputError
from bert_jax.data import corpus
from bert_jax.finetuning import config as finetune_config
from bert_jax.finetuning import runner
from bert_jax.runtime import multihost, workdir_lock

ROOT = pathlib.Path(__file__).resolve().parents[1]

_HOLD = """
import sys, time
from bert_jax.runtime.workdir_lock import workdir_lock
with workdir_lock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    time.sleep(600)
"""

_TRY = """
import sys
from bert_jax.config import InputError
from bert_jax.runtime.workdir_lock import workdir_lock
try:
    with workdir_lock(sys.argv[1], sys.argv[2]):
        print("locked")
except InputError as e:
    print(e)
"""


def _python(script: str, *args: str, **kwargs):
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"), **kwargs)


@pytest.fixture
def holder():
    """holder(directory, what): a process that holds the lock of `directory` until the test ends."""
    started = []

    def hold(directory, what="pretraining"):
        proc = _python(_HOLD, str(directory), what)
        started.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in started:
        proc.kill()
        proc.communicate()


def _try_in_subprocess(directory, what) -> str:
    proc = _python(_TRY, str(directory), what)
    out, _ = proc.communicate(timeout=120)
    return out


def _lock_file(directory) -> pathlib.Path:
    return pathlib.Path(directory) / workdir_lock.LOCK_NAME


def test_a_second_process_is_refused_with_one_line_naming_the_holder(tmp_path):
    directory = tmp_path / "run"
    with workdir_lock.workdir_lock(str(directory), "pretraining"):
        owner = json.loads(_lock_file(directory).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert owner["command"] == " ".join(sys.argv) and owner["started"].startswith(time.strftime("%Y-"))
        refused = _try_in_subprocess(directory, "fine-tuning")
    assert refused.count("\n") == 1, refused
    assert refused.startswith(f"cannot start fine-tuning in {directory}: pretraining by pid {os.getpid()} on host "
                              f"{socket.gethostname()}, started {owner['started']}, holds its lock (command: ")
    assert refused.rstrip().endswith("; wait for it to finish, stop it, or give another --workdir.")
    assert _lock_file(directory).read_text() == ""  # released cleanly: nobody's to take over
    assert _try_in_subprocess(directory, "fine-tuning") == "locked\n"


def test_the_lock_is_released_when_the_work_raises(tmp_path, caplog):
    with pytest.raises(RuntimeError), workdir_lock.workdir_lock(str(tmp_path), "export", flag="--output"):
        raise RuntimeError("the export failed")
    with caplog.at_level(logging.WARNING), workdir_lock.workdir_lock(str(tmp_path), "export", flag="--output"):
        pass
    assert not [r for r in caplog.records if "took over" in r.getMessage()]


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path, holder, caplog):
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with caplog.at_level(logging.WARNING), workdir_lock.workdir_lock(str(tmp_path), "pretraining"):
        assert json.loads(_lock_file(tmp_path).read_text())["pid"] == os.getpid()
    [warning] = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert f"took over the lock of {tmp_path} from pid {proc.pid} on {socket.gethostname()} (pretraining" in warning


def test_a_holder_on_another_machine_is_named_as_such(tmp_path, holder):
    holder(tmp_path)
    owner = {"pid": 4242, "host": "other-host", "command": "pretrain.py --workdir=x", "what": "pretraining",
             "started": "2026-01-02T03:04:05+00:00"}
    _lock_file(tmp_path).write_text(json.dumps(owner))  # as a process on another host of a shared disk wrote it
    expected = (r"pid 4242 on host other-host, another machine \(the directory is on a shared file system\), "
                r"started 2026-01-02T03:04:05\+00:00")
    with pytest.raises(InputError, match=expected), workdir_lock.workdir_lock(str(tmp_path), "pretraining"):
        pass


def test_a_file_given_as_the_directory_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a directory")
    with (pytest.raises(InputError, match=rf"^--workdir {path} is a file; give a directory\.$"),
          workdir_lock.workdir_lock(str(path), "pretraining")):
        pass
    with (pytest.raises(InputError, match=rf"^--output {path} is a file; give a directory\.$"),
          workdir_lock.workdir_lock(str(path), "export", flag="--output")):
        pass


def test_only_process_zero_locks_and_the_others_share_its_verdict(tmp_path, monkeypatch):
    store = _Store()

    def as_process(index):
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda: index)
        monkeypatch.setattr(multihost.distributed.global_state, "client", store)
        monkeypatch.setattr(multihost, "_call_index", iter(range(100)))  # each process counts its calls from 0

    as_process(0)
    with workdir_lock.workdir_lock(str(tmp_path / "shared"), "pretraining"):
        as_process(1)
        with workdir_lock.workdir_lock(str(tmp_path / "own"), "pretraining"):
            assert not (tmp_path / "own").exists()  # process 1 waited for process 0's "ok" and took nothing
    store.values = {key: "error: cannot start pretraining in /x: ..." for key in store.values}
    as_process(1)
    with (pytest.raises(InputError, match=r"^process 0 failed to lock its workdir: cannot start pretraining in /x"),
          workdir_lock.workdir_lock(str(tmp_path / "own"), "pretraining")):
        pass


def _wait_for(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _steps(workdir) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


@pytest.mark.slow  # long end-to-end case: `-m slow`, to keep CI under 20 minutes
def test_a_second_pretraining_run_is_refused_and_the_first_resumes(tmp_path, corpus_file, small_tokenizer):
    workdir, cache = tmp_path / "run", tmp_path / "jax_cache"
    command = _command(corpus_file, small_tokenizer.model_path, workdir, **{"train.num_train_steps": 100000})
    log = tmp_path / "first.log"
    with open(log, "w", encoding="utf-8") as stderr:
        first = subprocess.Popen(command, cwd=ROOT, env=_env(cache), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for(lambda: (workdir / "metrics.jsonl").is_file() or first.poll() is not None, "the first metrics line")
        assert first.poll() is None, log.read_text()[-3000:]

        started = time.time()
        second = subprocess.run(command, cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=120,
                                check=False)
        assert second.returncode == 1 and time.time() - started < 60, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: cannot start pretraining in {workdir}: pretraining by pid {first.pid} on "
                               "host "), last
        assert last.endswith("wait for it to finish, stop it, or give another --workdir."), last

        _wait_for(lambda: _steps(workdir), "the first checkpoint")
    finally:
        first.kill()
        first.wait()
    newest = _steps(workdir)[-1]
    third = subprocess.run(_command(corpus_file, small_tokenizer.model_path, workdir,
                                    **{"train.num_train_steps": newest + 2}),
                           cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=300, check=False)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"from pid {first.pid} on {socket.gethostname()} (pretraining" in third.stderr  # the takeover warning
    assert f"resumed from step {newest} " in third.stderr
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [m["step"] for m in lines if m["split"] == "train"] == list(range(1, newest + 3))  # each step once


def test_fine_tuning_is_refused_before_it_loads_anything(tmp_path, holder):
    proc = holder(tmp_path / "run")
    config = finetune_config.default_config()
    config.task = "sst2"
    config.init_checkpoint = str(tmp_path / "no_such_export")  # would fail later, were the lock not first
    with pytest.raises(InputError, match=rf"^cannot start fine-tuning in {tmp_path / 'run'}: pretraining by pid "
                                         rf"{proc.pid} .*or give another --workdir\.$"):
        runner.finetune(config, str(tmp_path / "run"))


def test_corpus_preparation_is_refused_while_a_run_holds_the_workdir(tmp_path, holder, corpus_file,
                                                                     small_tokenizer):
    proc = holder(tmp_path, "pretraining")
    config = pretrain_config.default_config()
    config.data.update({"corpus": corpus_file, "tokenizer_model": small_tokenizer.model_path, "preprocess_workers": 1})
    with pytest.raises(InputError, match=rf"^cannot start corpus preparation in {tmp_path}: pretraining by pid "
                                         rf"{proc.pid} "):
        corpus.prepare_locked(config.data, str(tmp_path))
    assert not (tmp_path / "corpus").exists()
    proc.kill()
    proc.wait()
    _, sources = corpus.prepare_locked(config.data, str(tmp_path))
    assert len(sources["train"]) > 0 and _lock_file(tmp_path).read_text() == ""
