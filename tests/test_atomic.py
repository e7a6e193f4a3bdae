"""runtime/atomic.py: a file or directory is replaced whole or not at all; a failed write (a full disk)
leaves the old file and no temporary behind, and says which path it was writing."""

import errno
import os
import stat

import pytest

from bert_jax import cli
from bert_jax.config import InputError
from bert_jax.runtime import atomic


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_write_replaces_the_file_keeps_its_mode_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    atomic.write_json(str(path), {"a": 1}, indent=2)
    assert path.read_text(encoding="utf-8") == '{\n  "a": 1\n}'
    os.chmod(path, 0o640)
    atomic.write_text(str(path), "héllo\n")
    atomic.write_bytes(str(tmp_path / "model"), b"\x00\xff")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert (tmp_path / "model").read_bytes() == b"\x00\xff"
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model"]


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, where):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n', encoding="utf-8")
    if where == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", _disk_full)
        with pytest.raises(OSError) as raised:
            atomic.write_text(str(path), '{"step": 2}\n' * 1000)
    else:
        with pytest.raises(OSError) as raised, atomic.writer(str(path)) as f:
            f.write('{"step": 2}\n' * 1000)
            _disk_full()  # what f.write raises when the disk fills midway
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.read_text(encoding="utf-8") == '{"step": 1}\n'
    assert os.listdir(tmp_path) == ["metrics.jsonl"]
    message = cli.path_error_message(raised.value)
    assert message.startswith(f"no space left on device writing {path};")


def test_any_error_midway_keeps_the_old_file_and_raises_as_is(tmp_path):
    path = tmp_path / "predictions.tsv"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(ZeroDivisionError), atomic.writer(str(path)) as f:
        f.write("new, half written")
        1 / 0  # noqa: B018 - a bug in the code producing the content
    missing = tmp_path / "elsewhere" / "input.txt"
    with pytest.raises(FileNotFoundError) as raised, atomic.writer(str(path)) as f:
        f.write(missing.read_text())
    assert raised.value.filename == str(missing)  # an error about another file keeps naming that file
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["predictions.tsv"]


def test_a_missing_directory_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        atomic.write_text(str(tmp_path / "no" / "config.json"), "{}")
    assert raised.value.filename == str(tmp_path / "no" / "config.json")


def test_a_directory_appears_only_when_complete(tmp_path):
    output = tmp_path / "export"
    with pytest.raises(OSError), atomic.directory(str(output)) as partial:
        atomic.write_text(os.path.join(partial, "config.json"), "{}")
        assert not output.exists()
        _disk_full()
    assert os.listdir(tmp_path) == []
    with atomic.directory(str(output)) as partial:
        atomic.write_text(os.path.join(partial, "config.json"), "{}")
        os.mkdir(os.path.join(partial, "params"))
    assert sorted(os.listdir(output)) == ["config.json", "params"]
    assert os.listdir(tmp_path) == ["export"]


def test_a_directory_replaces_an_empty_one_and_refuses_anything_else(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic.directory(str(tmp_path / "empty")) as partial:
        atomic.write_text(os.path.join(partial, "a"), "1")
    assert os.listdir(tmp_path / "empty") == ["a"]
    (tmp_path / "a_file").touch()
    for taken in (tmp_path / "empty", tmp_path / "a_file"):
        with pytest.raises(InputError, match="already exists and is not an empty directory"), \
                atomic.directory(str(taken)):
            pytest.fail("entered although the path is taken")
    assert sorted(os.listdir(tmp_path)) == ["a_file", "empty"]


def test_a_killed_attempts_partial_directory_is_removed_by_the_next(tmp_path):
    leftover = tmp_path / ".export.0123456789ab.partial"
    (leftover / "params").mkdir(parents=True)
    unrelated = tmp_path / ".other.0123456789ab.partial"
    unrelated.mkdir()
    with atomic.directory(str(tmp_path / "export")) as partial:
        atomic.write_text(os.path.join(partial, "a"), "1")
    assert sorted(os.listdir(tmp_path)) == [".other.0123456789ab.partial", "export"]


def test_commit_puts_a_file_written_elsewhere_in_place(tmp_path):
    temporary = atomic.temporary_name(str(tmp_path / "spm.model"))
    assert os.path.dirname(temporary) == str(tmp_path) and os.path.basename(temporary).startswith(".spm.model.")
    with open(temporary, "wb") as f:
        f.write(b"model")
    atomic.commit(temporary, str(tmp_path / "spm.model"))
    assert os.listdir(tmp_path) == ["spm.model"] and (tmp_path / "spm.model").read_bytes() == b"model"
    with pytest.raises(FileNotFoundError) as raised:
        atomic.commit(temporary, str(tmp_path / "spm.model"))
    assert raised.value.filename == str(tmp_path / "spm.model")


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    names = [".metrics.jsonl.0123456789ab.tmp", ".metrics.jsonl.0123456789ab.partial", "metrics.jsonl",
             ".metrics.jsonl.swp", ".config.json.0123456789ab.tmp", "metrics.jsonl.0123456789ab.tmp"]
    for name in names:
        (tmp_path / name).write_text("x", encoding="utf-8")
    atomic.remove_leftovers(str(tmp_path / "metrics.jsonl"))
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:])
