"""runtime/checkpoint.py, the one module that writes and reads checkpoints of every kind: a run's Orbax
steps (the meta of a checkpoint written before the package moved), params-only exports and the
fine-tuned parameters of a seed."""

import pathlib
import shutil

import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax.runtime import checkpoint as checkpoint_lib

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "pre_layout_run"


def test_the_meta_of_an_old_checkpoint_reads(tmp_path):
    shutil.copytree(FIXTURE / "run", tmp_path / "run")
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "run"), create=False)
    assert checkpointer.all_steps() == [2]
    step, meta = checkpointer.restore_meta()
    checkpointer.close()
    assert step == 2 and meta["tokenizer_kind"] == "sentencepiece"
    assert meta["tokenizer_model"] == (FIXTURE / "run" / "tokenizer" / "spm.model").read_bytes()
    assert config_lib.from_stored(meta["config"]).model.hidden_size == 16
    assert meta["data_state"] is not None  # the data iterator's position, for a bitwise resume


def test_no_checkpoints_is_an_input_error(tmp_path):
    with pytest.raises(config_lib.InputError, match="no checkpoints in"):
        checkpoint_lib.Checkpointer(str(tmp_path), create=False)


def test_an_old_export_reads_and_names_its_tokenizer(tmp_path):
    config, tokenizer, info = checkpoint_lib.read_export_info(str(FIXTURE / "params_export"))
    assert info["step"] == 2 and info["format"] == "params" and tokenizer.vocab_size == 64
    assert config.model.num_hidden_layers == 2
    assert checkpoint_lib.exported_tokenizer_path(str(FIXTURE / "params_export")).endswith("spm.model")
    with pytest.raises(config_lib.InputError, match="not a bert_jax params-only export"):
        checkpoint_lib.read_export_info(str(tmp_path))


def test_finetuned_params_round_trip_bitwise(tmp_path):
    rng = np.random.default_rng(0)
    params = {"bert": {"layers": {"0": {"kernel": rng.standard_normal((3, 4)).astype(np.float32)}}},
              "classifier": {"bias": rng.standard_normal(4).astype(np.float32)}}
    checkpoint_lib.save_finetuned_params(str(tmp_path / "seed_0"), params)
    assert (tmp_path / "seed_0" / checkpoint_lib.FINETUNED_PARAMS).is_dir()
    restored = checkpoint_lib.restore_finetuned_params(str(tmp_path / "seed_0"))
    np.testing.assert_array_equal(restored["bert"]["layers"]["0"]["kernel"], params["bert"]["layers"]["0"]["kernel"])
    np.testing.assert_array_equal(restored["classifier"]["bias"], params["classifier"]["bias"])


def test_a_step_removed_while_read_is_not_called_damaged(tmp_path, monkeypatch):
    """A live run deletes old steps (max_to_keep); a reader that loses the race is told that, not 'damaged'."""
    shutil.copytree(FIXTURE / "run", tmp_path / "run")
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "run"), create=False)
    real_restore = checkpointer.manager.restore

    def rotated_away(step, args=None):
        shutil.rmtree(checkpointer.step_path(step))  # the writer's rotation, between listing and reading
        return real_restore(step, args=args)

    monkeypatch.setattr(checkpointer.manager, "restore", rotated_away)
    with pytest.raises(config_lib.InputError, match=r"checkpoints/2 was removed while it was read: a running "
                                                    r"pretraining keeps only"):
        checkpointer.restore_meta(2)
    assert not (tmp_path / "run" / "checkpoints_damaged").exists()  # nothing set aside as damaged
