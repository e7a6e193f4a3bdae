"""ModernBERT interop with transformers (bert_jax/hf/modernbert_names.py): export -> ModernBertForMaskedLM,
import <- a transformers-built ModernBertForMaskedLM, the recipes' parameter counts, and continued pretraining.

transformers is the reference: its logits on a padded batch (one row at full length, one padded) must equal
ours within 1e-4 at the real tokens, with sequences longer than the local window so that the local layers'
masks and RoPE base matter. Needs the [hf] extra (torch, transformers, safetensors, tokenizers).
"""

import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.data import hf_tokenizers
from bert_jax.hf import convert as hf_convert
from bert_jax.hf import files as hf_files
from bert_jax.hf import modernbert_names, task_names
from bert_jax.hf import names as hf_names
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import run_checkpoint

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = pathlib.Path(__file__).resolve().parents[1]
SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # ModernBERT's, after the BPE pieces (ids 50280..)
SEQ, WINDOW = 32, 8  # a local layer sees 4 tokens each side: most of a 32-token row is outside it
TEXT = ["Return a new view of the dictionary's keys, sorted by value.",
        "Raise ValueError if the value is not present; the optional argument base defaults to e."]


def _bpe_tokenizer(corpus_file):
    """A ModernBERT-shaped byte-level BPE: ~250 merged pieces, the five specials only as added tokens after them."""
    from tokenizers import decoders, models, pre_tokenizers, trainers
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train([corpus_file], trainer)
    backend.add_special_tokens(list(SPECIALS))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")


def _hf_config(hf_tokenizer, **fields):
    ids = {"pad_token_id": hf_tokenizer.pad_token_id, "bos_token_id": hf_tokenizer.cls_token_id,
           "eos_token_id": hf_tokenizer.sep_token_id, "cls_token_id": hf_tokenizer.cls_token_id,
           "sep_token_id": hf_tokenizer.sep_token_id}
    shape = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 48, "num_attention_heads": 4,
             "max_position_embeddings": 64, "local_attention": WINDOW}
    return transformers.ModernBertConfig(**{**ids, **shape, **fields})


SHARPEN = 8.0  # query/key weights x 8: at init (std 0.02) attention is so flat that a wrong RoPE base moves
# the logits by < 1e-5; sharpened, by > 1e-3 (a wrong window or layer pattern by > 1e-2)


def _perturb_(module, seed):
    """Norm scales away from 1, a non-zero decoder bias (a swapped or dropped norm would show), sharp attention."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" in name or name == "decoder.bias":
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith("Wqkv.weight"):
                parameter[:2 * parameter.shape[1]].mul_(SHARPEN)  # the query and key rows


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory, corpus_file):
    """A random transformers ModernBertForMaskedLM (4 layers, global every 2nd) and its BPE tokenizer, saved."""
    hf_tokenizer = _bpe_tokenizer(corpus_file)
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(_hf_config(hf_tokenizer, num_hidden_layers=4,
                                                          global_attn_every_n_layers=2))
    _perturb_(model, seed=1)
    directory = tmp_path_factory.mktemp("modernbert") / "hf"
    model.save_pretrained(directory)
    hf_tokenizer.save_pretrained(directory)
    return str(directory)


def _batch(tokenizer, length=SEQ):
    """Row 0 fills all `length` positions; row 1 is a short sentence then padding."""
    ids_of = lambda text: [tokenizer.special_ids.cls, *tokenizer.encode(text), tokenizer.special_ids.sep]
    long_row = (ids_of(TEXT[0] + " " + TEXT[1]) * 3)[:length]
    short_row = ids_of(TEXT[0])[:length // 2]
    ids = np.full((2, length), tokenizer.special_ids.pad, np.int64)
    ids[0], ids[1, :len(short_row)] = long_row, short_row
    return ids, (ids != tokenizer.special_ids.pad).astype(np.int64)


def _our_logits(config, params, ids, mask):
    """MLM logits [batch, seq, vocab] at every position (all positions gathered)."""
    model = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: pretraining_heads.build_model(config, 0))), params)
    positions = np.tile(np.arange(ids.shape[1]), (len(ids), 1))
    logits, _ = model(jnp.asarray(ids), jnp.zeros_like(jnp.asarray(ids)), jnp.asarray(mask), jnp.asarray(positions))
    return np.asarray(logits)


def _hf_logits(model, ids, mask):
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def _check_same_logits(ours, theirs, mask):
    """Equal within 1e-4 at the real tokens; finite everywhere, padded positions included (their values there
    are not defined: a padded query in a local layer may see no key)."""
    assert np.isfinite(ours).all() and np.isfinite(theirs).all()
    real = mask.astype(bool)
    difference = np.abs(ours[real] - theirs[real]).max()
    assert difference <= 1e-4, difference
    return difference


def test_a_transformers_modernbert_imports_with_the_same_logits(hf_model_dir, tmp_path):
    hf_convert.import_hf_directory(hf_model_dir, str(tmp_path / "export"))
    config, tokenizer, params = run_checkpoint.load_params_only(str(tmp_path / "export"))
    m = config.model
    assert (config.objective, m.type_vocab_size, m.position_encoding, m.ffn_activation) == ("mlm", 0, "rotary", "geglu")
    assert (m.local_attention_window, m.global_attention_every_n_layers) == (WINDOW, 2)
    assert (m.rope_theta, m.local_rope_theta, m.layer_norm_eps, m.use_bias) == (160000.0, 10000.0, 1e-5, False)
    assert "attention_layer_norm" not in params["bert"]["layers"][0]  # HF's Identity: the embedding norm serves

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_model_dir)
    assert [tokenizer.encode(t) for t in TEXT] == [hf_tokenizer(t, add_special_tokens=False)["input_ids"]
                                                   for t in TEXT]
    ids, mask = _batch(tokenizer)
    assert (tokenizer.special_ids.cls, tokenizer.special_ids.mask) == (hf_tokenizer.cls_token_id,
                                                                       hf_tokenizer.mask_token_id)
    reference = transformers.ModernBertForMaskedLM.from_pretrained(hf_model_dir, attn_implementation="eager")
    _check_same_logits(_our_logits(config, params, ids, mask), _hf_logits(reference, ids, mask), mask)


def test_a_truncated_safetensors_file_is_named(hf_model_dir, tmp_path):
    """An interrupted download: one line naming the file, not safetensors' own exception."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(hf_model_dir):
        data = (pathlib.Path(hf_model_dir) / name).read_bytes()
        (broken / name).write_bytes(data[: len(data) // 2] if name == "model.safetensors" else data)
    with pytest.raises(InputError, match=r"model\.safetensors is not a readable safetensors file"):
        hf_convert.import_hf_directory(str(broken), str(tmp_path / "export"))


def _our_modernbert(tokenizer, seed=0, tie_word_embeddings=True):
    """A 3-layer ModernBERT-shaped config of ours (layer 0 global, 1 and 2 local) and random params, norm
    scales and the vocabulary bias moved away from their initial values, attention sharpened as in `_perturb_`."""
    config = config_lib.modernbert_recipe(config_lib.default_config())
    config.model.update({"vocab_size": 320, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                         "intermediate_size": 48, "max_position_embeddings": 64, "local_attention_window": WINDOW,
                         "tie_word_embeddings": tie_word_embeddings})
    config.data.update({"max_seq_length": SEQ, "tokenizer_vocab_size": tokenizer.vocab_size})
    config.masking.max_predictions_per_seq = 10
    params = nnx.to_pure_dict(nnx.state(pretraining_heads.build_model(config, seed), nnx.Param))
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: np.asarray(x) + (0.2 * rng.normal(size=x.shape).astype(np.float32)
                                         if "scale" in jax.tree_util.keystr(path) or x.ndim == 1 else 0), params)
    for layer in params["bert"]["layers"].values():
        for name in ("query", "key"):
            layer["attention"][name]["kernel"] = layer["attention"][name]["kernel"] * SHARPEN
    return config, params


@pytest.mark.parametrize("attention, tied", [("eager", True), ("sdpa", True), ("eager", False)])
def test_an_export_loads_in_transformers_with_the_same_logits(hf_model_dir, tmp_path, attention, tied):
    tokenizer = hf_files.read_hf_directory(hf_model_dir)[2]
    config, params = _our_modernbert(tokenizer, tie_word_embeddings=tied)
    assert hf_names.hf_architecture(config) == modernbert_names.MODERNBERT
    hf_dir = str(tmp_path / "hf")
    hf_files.write_hf_directory(hf_dir, params, config, tokenizer)
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir, output_loading_info=True,
                                                                    attn_implementation=attention)
    assert type(model).__name__ == "ModernBertForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert model.config.sliding_window == WINDOW // 2
    tied_in_hf = model.decoder.weight.data_ptr() == model.model.embeddings.tok_embeddings.weight.data_ptr()
    assert tied_in_hf == tied
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)  # reads tokenizer.json for ModernBERT
    ids = tokenizer.special_ids
    assert [[ids.cls, *tokenizer.encode(t), ids.sep] for t in TEXT] == [hf_tokenizer(t)["input_ids"] for t in TEXT]
    assert (hf_tokenizer.pad_token_id, hf_tokenizer.mask_token_id) == (ids.pad, ids.mask)
    ids, mask = _batch(tokenizer)
    _check_same_logits(_our_logits(config, params, ids, mask), _hf_logits(model, ids, mask), mask)

    # And back: the directory imports to the same arrays and the same model config.
    hf_convert.import_hf_directory(hf_dir, str(tmp_path / "back"))
    back_config, _, back = run_checkpoint.load_params_only(str(tmp_path / "back"))
    fields = [f for f in modernbert_names.model_overrides({}) if f != "max_position_embeddings"]
    assert {f: back_config.model[f] for f in fields} == {f: config.model[f] for f in fields}
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_transformers_4_config_spelling_imports_the_same_model():
    """Hub configs written by transformers 4.x: global_attn_every_n_layers and global/local_rope_theta."""
    legacy = {"model_type": "modernbert", "num_hidden_layers": 7, "global_attn_every_n_layers": 3,
              "global_rope_theta": 80000.0, "local_rope_theta": 5000.0, "local_attention": 16}
    new = transformers.ModernBertConfig(**{k: v for k, v in legacy.items() if k != "model_type"}).to_dict()
    assert new["layer_types"][:4] == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    ours = modernbert_names.model_overrides(legacy)
    assert ours == modernbert_names.model_overrides(new)
    assert (ours["global_attention_every_n_layers"], ours["rope_theta"], ours["local_rope_theta"],
            ours["local_attention_window"]) == (3, 80000.0, 5000.0, 16)
    every_layer_global = modernbert_names.model_overrides({**legacy, "global_attn_every_n_layers": 1})
    assert (every_layer_global["local_attention_window"], every_layer_global["global_attention_every_n_layers"]) == (0, 1)
    odd = modernbert_names.model_overrides({**legacy, "local_attention": 17})  # 17 // 2 = 8 each side, as 16
    assert odd["local_attention_window"] == 16


@pytest.mark.parametrize("fields, message", [
    ({"layer_types": ["full_attention", "full_attention", "sliding_attention"]}, "layer_types"),
    ({"attention_bias": True}, "one switch for every bias"),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1e4}}}, "rope_type='yarn'"),
    ({"hidden_activation": "gelu", "classifier_activation": "relu"}, "classifier_activation"),
    ({"local_attention": 1}, "local_attention=1"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 5e3}}, "per layer kind"),  # not silently 160k
    ({"local_attention": None}, r"null for \['local_attention'\]"),
    ({"layer_types": ["full_attention", "chunked_attention", "full_attention"]}, "chunked_attention"),
])
def test_configs_bert_jax_cannot_compute_are_refused(fields, message):
    with pytest.raises(InputError, match=message):
        modernbert_names.model_overrides({"model_type": "modernbert", "num_hidden_layers": 3, **fields})


@pytest.mark.parametrize("overrides, message", [
    ({"norm_placement": "post", "final_norm": False}, r"norm_placement='post'"),
    ({"norm_kind": "rmsnorm"}, r"norm_kind='rmsnorm'"),
    ({"type_vocab_size": 2}, r"type_vocab_size=2"),
    ({"position_encoding": "alibi"}, r"position_encoding='alibi'"),
    ({"norm_placement": "post", "final_norm": False, "position_encoding": "alibi"},  # MosaicBERT: all named
     r"norm_placement='post'.*position_encoding='alibi'.*needs norm_placement='pre'.*position_encoding='rotary'"),
    ({"ffn_activation": "gelu"}, r"ffn_activation='gelu'"),
])
def test_models_modernbert_cannot_compute_are_refused_by_name(overrides, message):
    config = config_lib.modernbert_recipe(config_lib.default_config())
    config.model.update(overrides)
    with pytest.raises(InputError, match=message):
        modernbert_names.to_state_dict({}, config, pad_token_id=0)


def test_a_modern_block_is_never_written_as_a_bert_family_class():
    config = config_lib.modernbert_recipe(config_lib.default_config())
    config.objective = "mlm_nsp"
    with pytest.raises(InputError, match="objective='mlm_nsp'"):
        hf_files.hf_state_and_config({}, config, pad_token_id=0)
    config.objective, config.model.type_vocab_size = "mlm", 2  # a fine-tuned model with segments
    with pytest.raises(InputError, match="norm_placement"):
        task_names.task_model_type(config)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("name, sizes, published", [
    ("modernbert_base", {}, 149e6),  # ModernBertConfig's defaults are ModernBERT-base's
    ("modernbert_large", {"hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16,
                          "intermediate_size": 2624}, 395e6),
])
def test_recipes_have_the_parameter_count_of_transformers_modernbert(name, sizes, published):
    config = config_lib.validate(_load(name))
    abstract = nnx.eval_shape(lambda: pretraining_heads.build_model(config, 0))
    ours = sum(int(x.size) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    with torch.device("meta"):
        model = transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**sizes))
    theirs = sum(p.numel() for p in model.parameters())  # the tied decoder weight is counted once
    assert ours == theirs and abs(ours - published) < 0.01 * published, (ours, theirs)


def test_a_modernbert_tokenizer_json_reads_with_its_special_ids(hf_model_dir):
    tokenizer = hf_tokenizers.from_tokenizer_json(os.path.join(hf_model_dir, "tokenizer.json"), {})
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_model_dir)
    ids = tokenizer.special_ids
    assert (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask) == tuple(
        hf_tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))
    assert ids.mask == tokenizer.vocab_size - 1 and tokenizer.special_table()[list(ids.__dict__.values())].all()


@pytest.mark.slow  # a pretraining run: kept out of the quick suite; run with -m slow
def test_continued_pretraining_of_an_imported_modernbert_exports_back(hf_model_dir, corpus_file, tmp_path):
    from test_loop import _small_config

    from bert_jax.pretraining import loop

    hf_convert.import_hf_directory(hf_model_dir, str(tmp_path / "imported"))
    config = _small_config(corpus_file, "", "", num_steps=1)
    config.train.init_checkpoint = str(tmp_path / "imported")
    config.train.warmup_steps = 1  # learning rate 0 at the only step: the weights stay the imported ones
    config.data.update({"instance_format": "full_sentences", "max_seq_length": SEQ})
    final = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert final["step"] == 1 and np.isfinite(final["mlm_loss"])

    hf_convert.export_hf(str(tmp_path / "run"), str(tmp_path / "hf"))
    exported = transformers.ModernBertForMaskedLM.from_pretrained(str(tmp_path / "hf"))
    original = transformers.ModernBertForMaskedLM.from_pretrained(hf_model_dir)
    _, tokenizer, _ = run_checkpoint.load_params_only(str(tmp_path / "imported"))
    ids, mask = _batch(tokenizer)
    real = mask.astype(bool)
    assert np.abs(_hf_logits(exported, ids, mask)[real] - _hf_logits(original, ids, mask)[real]).max() <= 1e-5
