"""HF interop against HF transformers itself: exported weights load into HF's classes without missing or
unexpected keys and give the same logits; import inverts export; bad checkpoints fail with clear errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from bert_jax import config as config_lib  # noqa: E402
from bert_jax.hf import names as hf_names
from bert_jax.model import encoder, pretraining_heads

SEQ = 12
PAD = 0  # bert_jax tokenizers put [PAD] at id 0
_SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=16)
CASES = {  # name: (config.model overrides, objective, expected HF class)
    "bert": ({}, "mlm_nsp", "BertForPreTraining"),
    "albert": (dict(embedding_size=16, num_hidden_groups=1, hidden_act="gelu_tanh"), "mlm_sop",
               "AlbertForPreTraining"),
    "albert_2_groups_4_layers": (dict(embedding_size=16, num_hidden_groups=2, num_hidden_layers=4,
                                      hidden_act="gelu_tanh"), "mlm_sop", "AlbertForPreTraining"),
    "roberta": (dict(type_vocab_size=1, max_position_embeddings=SEQ + 2), "mlm", "RobertaForMaskedLM"),
    # Representable through ALBERT's identity embedding mapping / one group per layer:
    "albert_shared_unfactorized": (dict(num_hidden_groups=1), "mlm_sop", "AlbertForPreTraining"),
    "bert_sop_unshared": ({}, "mlm_sop", "AlbertForPreTraining"),
    "albert_mlm": (dict(embedding_size=16, num_hidden_groups=1), "mlm", "AlbertForMaskedLM"),
}


def _config(name):
    overrides, objective, _ = CASES[name]
    config = config_lib.default_config()
    config.model.update({**_SMALL, **overrides})
    config.objective = objective
    config.data.max_seq_length = SEQ
    return config


def _random_params(config, seed=0):
    """A model whose every parameter (LayerNorm and biases too) is random, so none is trivially 0/1."""
    model = pretraining_heads.build_model(config, seed)
    rng = np.random.default_rng(seed)
    for _, param in nnx.iter_graph(model):
        if isinstance(param, nnx.Param):
            param.set_value(jnp.asarray(rng.normal(0.0, 0.3, param.shape), jnp.float32))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _inputs(config, seed=1):
    """Right-padded rows of lengths 12, 9, 6 (no pad id inside the text) and masked positions in them."""
    rng = np.random.default_rng(seed)
    lengths = [SEQ, 9, 6]
    input_ids = rng.integers(5, config.model.vocab_size, (3, SEQ))
    attention_mask = (np.arange(SEQ)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    input_ids = np.where(attention_mask > 0, input_ids, PAD)
    segment_ids = np.zeros_like(input_ids)
    if config.model.type_vocab_size > 1:
        segment_ids = ((np.arange(SEQ)[None] >= np.asarray(lengths)[:, None] // 2) & (attention_mask > 0))
    masked_positions = np.asarray([[1, 5, 11], [0, 4, 8], [2, 3, 5]])
    return input_ids, segment_ids.astype(np.int64), attention_mask, masked_positions


def _save_and_load_hf(state_dict, hf_config, tmp_path):
    """What users do: write model.safetensors + config.json, then from_pretrained."""
    safetensors_numpy.save_file(state_dict, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    model_class = getattr(transformers, hf_config["architectures"][0])
    hf_model, info = model_class.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return hf_model.eval().float()


def _max_diffs(model, config, hf_model):
    """Max |ours - HF| of MLM logits (masked positions), pair logits and last hidden state (real tokens)."""
    input_ids, segment_ids, attention_mask, masked_positions = _inputs(config)
    mlm_logits, pair_logits = model(jnp.asarray(input_ids), jnp.asarray(segment_ids), jnp.asarray(attention_mask),
                                    jnp.asarray(masked_positions))
    hidden, _ = model.bert(jnp.asarray(input_ids), jnp.asarray(segment_ids), jnp.asarray(attention_mask))
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(input_ids), token_type_ids=torch.tensor(segment_ids),
                       attention_mask=torch.tensor(attention_mask), output_hidden_states=True)
    hf_logits = getattr(out, "prediction_logits", None)
    hf_logits = (out.logits if hf_logits is None else hf_logits).numpy()
    hf_logits = np.take_along_axis(hf_logits, masked_positions[:, :, None], axis=1)
    real = attention_mask > 0
    diffs = {"mlm": np.abs(np.asarray(mlm_logits) - hf_logits).max(),
             "hidden": np.abs(np.asarray(hidden)[real] - out.hidden_states[-1].numpy()[real]).max()}
    if pair_logits is not None:
        hf_pair = out.seq_relationship_logits if hasattr(out, "seq_relationship_logits") else out.sop_logits
        diffs["pair"] = np.abs(np.asarray(pair_logits) - hf_pair.numpy()).max()
    return diffs


@pytest.mark.parametrize("name", list(CASES))
def test_exported_model_loads_in_hf_and_matches(name, tmp_path):
    config = _config(name)
    assert hf_names.hf_architecture(config) == CASES[name][2]
    model, params = _random_params(config)
    state_dict = hf_names.to_hf_state_dict(params, config, pad_token_id=PAD)
    hf_config = hf_names.hf_config_dict(config, pad_token_id=PAD, bos_token_id=2, eos_token_id=3)
    hf_model = _save_and_load_hf(state_dict, hf_config, tmp_path)
    diffs = _max_diffs(model, config, hf_model)
    assert set(diffs) == ({"mlm", "hidden"} if config.objective == "mlm" else {"mlm", "hidden", "pair"})
    assert max(diffs.values()) <= 1e-5, diffs


def _assert_trees_equal(actual, expected, path=()):
    assert set(actual) == set(expected), (path, set(actual) ^ set(expected))
    for key, value in expected.items():
        if isinstance(value, dict):
            _assert_trees_equal(actual[key], value, path + (key,))
        else:
            assert np.array_equal(np.asarray(actual[key]), np.asarray(value)), path + (key,)


@pytest.mark.parametrize("name", list(CASES))
def test_import_inverts_export(name):
    config = _config(name)
    _, params = _random_params(config)
    hf_config = hf_names.hf_config_dict(config, pad_token_id=PAD)
    loaded = hf_names.from_hf_state_dict(hf_names.to_hf_state_dict(params, config, pad_token_id=PAD), hf_config)
    assert loaded.unexpected_keys == []
    fields = dict(config.model)
    assert {k: fields[k] for k in loaded.config_overrides["model"]} == loaded.config_overrides["model"]
    if name == "albert_mlm":  # ALBERT imports as mlm_sop; AlbertForMaskedLM has no pooler or SOP head
        assert loaded.config_overrides["objective"] == "mlm_sop"
        assert loaded.missing_heads == ["bert/pooler", "pair_head"]
    else:
        assert loaded.config_overrides["objective"] == config.objective and loaded.missing_heads == []
    expected = params
    if name == "roberta":  # the last pad_token_id + 1 rows have no HF position and come back as zeros
        table = np.asarray(params["bert"]["embeddings"]["position_embeddings"]["embedding"])
        shifted = np.concatenate([table[:-(PAD + 1)], np.zeros_like(table[-(PAD + 1):])])
        expected = hf_names.with_fresh_heads(
            {"bert": {"embeddings": {"position_embeddings": {"embedding": shifted}}}}, params)
    _assert_trees_equal(loaded.params, expected)


def test_roberta_import_from_hf_with_pad_id_1_matches_hf():
    """HF's own RoBERTa (pad 1: positions start at 2) imported into our model gives HF's outputs."""
    hf_config = transformers.RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64, max_position_embeddings=SEQ + 2, type_vocab_size=1,
                                           pad_token_id=1, layer_norm_eps=1e-5)
    torch.manual_seed(0)
    hf_model = transformers.RobertaForMaskedLM(hf_config).eval()
    state_dict = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    loaded = hf_names.from_hf_state_dict(state_dict, hf_config.to_dict())
    assert loaded.missing_heads == [] and loaded.config_overrides["objective"] == "mlm"
    config = config_lib.default_config()
    config.update(loaded.config_overrides)
    model = pretraining_heads.build_model(config, 0)
    nnx.update(model, hf_names.with_fresh_heads(loaded.params, nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    input_ids, segment_ids, attention_mask, masked_positions = _inputs(config)
    input_ids = np.where(attention_mask > 0, input_ids, 1)  # HF RoBERTa finds padding by the pad id
    ours, _ = model(jnp.asarray(input_ids), jnp.asarray(segment_ids), jnp.asarray(attention_mask),
                    jnp.asarray(masked_positions))
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask)).logits
    theirs = np.take_along_axis(theirs.numpy(), masked_positions[:, :, None], axis=1)
    assert np.abs(np.asarray(ours) - theirs).max() <= 1e-5


def test_bare_hf_bert_model_reports_missing_heads_and_matches(tmp_path):
    """A BertModel checkpoint (no `bert.` prefix, no cls.*; what sentence-transformers' MiniLM ships)."""
    hf_config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=16)
    torch.manual_seed(0)
    hf_model = transformers.BertModel(hf_config).eval()
    hf_model.save_pretrained(str(tmp_path))
    state_dict = safetensors_numpy.load_file(str(tmp_path / "model.safetensors"))
    state_dict["embeddings.position_ids"] = np.arange(16)[None]  # some HF versions save this buffer
    assert not any(k.startswith(("bert.", "cls.")) for k in state_dict)
    loaded = hf_names.from_hf_state_dict(state_dict, json.loads((tmp_path / "config.json").read_text()))
    assert loaded.missing_heads == ["mlm_head", "pair_head"] and loaded.unexpected_keys == []
    config = config_lib.default_config()
    config.update(loaded.config_overrides)
    model = pretraining_heads.build_model(config, 0)
    nnx.update(model, hf_names.with_fresh_heads(loaded.params, nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    input_ids, segment_ids, attention_mask, _ = _inputs(config)
    ours, pooled = model.bert(jnp.asarray(input_ids), jnp.asarray(segment_ids), jnp.asarray(attention_mask))
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(input_ids), token_type_ids=torch.tensor(segment_ids),
                       attention_mask=torch.tensor(attention_mask))
    real = attention_mask > 0
    assert np.abs(np.asarray(ours)[real] - out.last_hidden_state.numpy()[real]).max() <= 1e-5
    assert np.abs(np.asarray(pooled) - out.pooler_output.numpy()).max() <= 1e-5


@pytest.fixture(scope="module")
def bert_export():
    config = _config("bert")
    _, params = _random_params(config)
    return (hf_names.to_hf_state_dict(params, config, pad_token_id=PAD),
            hf_names.hf_config_dict(config, pad_token_id=PAD))


def test_shape_mismatch_names_tensor_and_both_shapes(bert_export):
    state_dict, hf_config = bert_export
    with pytest.raises(config_lib.InputError,
                       match=r"bert\.embeddings\.word_embeddings\.weight has shape \(64, 32\), expected \(70, 32\)"):
        hf_names.from_hf_state_dict(state_dict, {**hf_config, "vocab_size": 70})
    with pytest.raises(config_lib.InputError,
                       match=r"bert\.encoder\.layer\.0\.attention\.self\.query\.weight has shape \(32, 32\), "
                             r"expected \(16, 16\)"):
        hf_names.from_hf_state_dict(state_dict, {**hf_config, "hidden_size": 16, "num_attention_heads": 2})


def test_unknown_tensors_are_listed_and_missing_encoder_tensors_raise(bert_export):
    state_dict, hf_config = bert_export
    extra = {**state_dict, "bert.embeddings.position_ids": np.arange(16)[None],
             "classifier.weight": np.zeros((3, 32), np.float32)}
    assert hf_names.from_hf_state_dict(extra, hf_config).unexpected_keys == ["classifier.weight"]
    name = "bert.encoder.layer.1.output.dense.bias"
    with pytest.raises(config_lib.InputError, match=name):
        hf_names.from_hf_state_dict({k: v for k, v in state_dict.items() if k != name}, hf_config)
    with pytest.raises(config_lib.InputError, match="cls.seq_relationship.bias"):  # half a head
        hf_names.from_hf_state_dict({k: v for k, v in state_dict.items() if k != "cls.seq_relationship.bias"},
                                   hf_config)


def test_tied_decoder_copies_are_checked(bert_export):
    state_dict, hf_config = bert_export
    tied = {**state_dict, "cls.predictions.decoder.weight": state_dict["bert.embeddings.word_embeddings.weight"],
            "cls.predictions.decoder.bias": state_dict["cls.predictions.bias"]}
    assert hf_names.from_hf_state_dict(tied, hf_config).unexpected_keys == []
    tied["cls.predictions.decoder.weight"] = tied["cls.predictions.decoder.weight"] + 1.0
    with pytest.raises(config_lib.InputError, match="not tied"):
        hf_names.from_hf_state_dict(tied, hf_config)


def test_unrepresentable_configs_raise():
    config = _config("albert")
    config.objective = "mlm_nsp"
    with pytest.raises(config_lib.InputError, match="embedding_size=16.*num_hidden_groups=1.*mlm_nsp"):
        hf_names.hf_architecture(config)
    config = _config("roberta")
    config.model.hidden_act = "gelu_tanh"
    with pytest.raises(config_lib.InputError, match="hidden_act='gelu_tanh'"):
        hf_names.hf_architecture(config)
    config = _config("roberta")
    config.data.max_seq_length = SEQ + 2  # HF RoBERTa has only rows - (pad + 1) positions
    with pytest.raises(config_lib.InputError, match="max_seq_length"):
        hf_names.to_hf_state_dict({}, config, pad_token_id=PAD)
    albert = hf_names.hf_config_dict(_config("albert"), pad_token_id=PAD)
    for bad in ({"inner_group_num": 2}, {"num_hidden_groups": 3}):
        with pytest.raises(config_lib.InputError, match="inner_group_num"):
            hf_names.from_hf_state_dict({}, {**albert, **bad})


def test_spanbert_exports_as_a_masked_lm_without_its_span_boundary_head(tmp_path, monkeypatch):
    """A pretraining run with objective 'mlm_sbo' through `export_hf`: the SBO head is dropped (and the summary
    says so), transformers loads the rest with no missing or unexpected keys, and its MLM logits are ours.
    Factorized or shared layers make it an AlbertForMaskedLM; no segment table cannot be a BERT."""
    from types import SimpleNamespace

    from bert_jax.data import hf_tokenizers
    from bert_jax.hf import convert as hf_convert
    from bert_jax.pretraining import run_checkpoint

    config = config_lib.default_config()
    config.model.update(_SMALL)
    config.objective = "mlm_sbo"
    config.data.max_seq_length = SEQ
    albert = config_lib.from_stored(config.to_dict())
    albert.model.update({"embedding_size": 16, "num_hidden_groups": 1})
    assert hf_names.hf_architecture(albert) == "AlbertForMaskedLM"
    albert.model.update({"embedding_size": 0, "num_hidden_groups": 0, "type_vocab_size": 0})
    with pytest.raises(config_lib.InputError, match="type_vocab_size=0 .* BertForMaskedLM, which always has one"):
        hf_names.hf_architecture(albert)
    architecture = "BertForMaskedLM"
    model, _ = _random_params(config)
    assert "sbo_head" in nnx.to_pure_dict(nnx.state(model, nnx.Param))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(59))]) + "\n")
    run = SimpleNamespace(config=config, tokenizer=hf_tokenizers.WordPieceTokenizer.from_vocab(str(vocab)), step=7,
                          state=SimpleNamespace(params=nnx.state(model, nnx.Param)))
    monkeypatch.setattr(run_checkpoint, "restore_run_checkpoint", lambda workdir, step: run)

    summary = hf_convert.export_hf("RUN", str(tmp_path / "hf"))
    assert f"as {architecture} to" in summary
    assert "span-boundary head (sbo_head, used only in pretraining)" in summary and "left out" in summary
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["architectures"] == [architecture]
    model_class = getattr(transformers, architecture)
    hf_model, info = model_class.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    diffs = _max_diffs(model, config, hf_model.eval().float())
    assert set(diffs) == {"mlm", "hidden"} and max(diffs.values()) <= 1e-5, diffs


def test_a_language_table_has_no_transformers_class():
    """XLM's language embeddings would be dropped by any BERT-family export: refused in one line, for pretraining
    exports (hf_architecture) and for every other writer of an HF config (encoder_config_dict)."""
    for name in ("bert", "roberta"):
        config = _config(name)
        config.model.num_languages = 2
        with pytest.raises(config_lib.InputError, match=r"num_languages=2\), which no transformers BERT"):
            hf_names.hf_architecture(config)
    with pytest.raises(config_lib.InputError, match="language embeddings"):
        hf_names.encoder_config_dict(encoder.BertConfig(num_languages=3), "bert", pad_token_id=PAD, bos_token_id=None,
                                     eos_token_id=None)
