"""Fine-tuned models to and from transformers (finetuning/hf_export.py, hf/task_names.py): every head kind on
BERT, RoBERTa and ALBERT encoders loads in AutoModelFor<task> with no missing or unexpected keys, carries
its labels, and gives our logits to 1e-5; HF fine-tuned classifiers import and predict the same labels."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_jax import config as config_lib  # noqa: E402
from bert_jax.config import InputError  # noqa: E402
from bert_jax.data import hf_tokenizers  # noqa: E402
from bert_jax.finetuning import config as finetune_config_lib  # noqa: E402
from bert_jax.finetuning import hf_export, model_dir, own_tasks, steps  # noqa: E402
from bert_jax.finetuning.task_spec import TaskSpec  # noqa: E402
from bert_jax.hf import task_names  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 12
VOCAB = 64
_SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
ENCODERS = {  # name: (config.model overrides, objective, HF class prefix)
    "bert": ({}, "mlm_nsp", "Bert"),
    "roberta": (dict(type_vocab_size=1, max_position_embeddings=SEQ + 1), "mlm", "Roberta"),
    "albert": (dict(embedding_size=16, num_hidden_groups=1, hidden_act="gelu_tanh"), "mlm_sop", "Albert"),
}
LABELS = {
    "classification": ("negative", "neutral", "positive"),
    "multi_label_classification": ("bug", "docs", "question", "urgent"),
    "regression": (),
    "token_classification": ("O", "B-PER", "I-PER", "B-LOC", "I-LOC"),
    "qa": (),
    "multiple_choice": ("0", "1", "2"),
}
AUTO = {"ForSequenceClassification": "AutoModelForSequenceClassification",
        "ForTokenClassification": "AutoModelForTokenClassification",
        "ForQuestionAnswering": "AutoModelForQuestionAnswering", "ForMultipleChoice": "AutoModelForMultipleChoice"}
CASES = [("bert", kind) for kind in LABELS] + [
    ("roberta", "classification"), ("roberta", "token_classification"), ("roberta", "multiple_choice"),
    ("roberta", "qa"), ("albert", "classification"), ("albert", "regression"), ("albert", "qa"),
    ("albert", "multiple_choice")]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A WordPiece vocabulary of VOCAB pieces ([PAD] = 0, as in every bert_jax tokenizer)."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    words = [f"w{i}" for i in range(VOCAB - 5)]
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return hf_tokenizers.WordPieceTokenizer.from_vocab(str(path))


def _config(encoder_name):
    overrides, objective, _ = ENCODERS[encoder_name]
    config = config_lib.default_config()
    config.model.update({**_SMALL, **overrides})
    config.objective = objective
    config.data.max_seq_length = SEQ
    return config


def _random_model(config, kind, seed=0):
    """A task model whose every parameter (head, LayerNorms and biases too) is random."""
    model = steps.build_task_model(config.model, kind, task_names.head_width(kind, LABELS[kind]), seed)
    rng = np.random.default_rng(seed)
    for _, param in nnx.iter_graph(model):
        if isinstance(param, nnx.Param):
            param.set_value(jnp.asarray(rng.normal(0.0, 0.3, param.shape), jnp.float32))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _save_model_dir(path, params, config, tokenizer, kind):
    finetune_config = finetune_config_lib.default_config()
    finetune_config.task = kind
    finetune_config.data.max_seq_length = SEQ
    task = TaskSpec(name=kind, kind=kind, label_names=LABELS[kind], eval_splits=(), local_files={}, tfds_name=None,
                    reading=own_tasks.reading_settings(finetune_config),
                    tag_scheme="BIO" if kind == "token_classification" else "", own=True)
    model_dir.save(str(path), params, config, tokenizer, task, finetune_config, {"source": "test"})


def _inputs(config, seed=1, pad=0, choices=0):
    """Right-padded rows of lengths 12, 9, 6 (no pad id inside the text), with two segments where the
    encoder has token types; [2, choices, SEQ] rows for multiple choice."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray([SEQ, 9, 6] if not choices else [[SEQ, 7, 5][:choices], [6, SEQ, 9][:choices]])
    shape = lengths.shape + (SEQ,)
    attention_mask = (np.arange(SEQ) < lengths[..., None]).astype(np.int64)
    input_ids = np.where(attention_mask > 0, rng.integers(5, VOCAB, shape), pad)
    segment_ids = np.zeros(shape, np.int64)
    if config.model.type_vocab_size > 1:
        segment_ids = ((np.arange(SEQ) >= lengths[..., None] // 2) & (attention_mask > 0)).astype(np.int64)
    return input_ids, segment_ids, attention_mask


def _ours(path, inputs):
    """Logits of the model directory at `path`, read back as predict reads it."""
    loaded = model_dir.load(str(path))
    model = steps.build_task_model(loaded.config.model, loaded.task.kind,
                                   task_names.head_width(loaded.task.kind, loaded.task.label_names), seed=1)
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, loaded.params)
    nnx.update(model, state)
    return np.asarray(model(*(jnp.asarray(x) for x in inputs)))


def _theirs(hf_model, inputs, kind):
    input_ids, segment_ids, attention_mask = (torch.tensor(x) for x in inputs)
    with torch.no_grad():
        out = hf_model(input_ids=input_ids, token_type_ids=segment_ids, attention_mask=attention_mask)
    if kind == "qa":
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)
    return out.logits.numpy()


@pytest.mark.parametrize("encoder_name,kind", CASES)
def test_export_loads_in_transformers_with_our_labels_and_logits(encoder_name, kind, tokenizer, tmp_path):
    config = _config(encoder_name)
    _, params = _random_model(config, kind)
    _save_model_dir(tmp_path / "model", params, config, tokenizer, kind)
    summary = hf_export.export_finetuned_hf(str(tmp_path / "model"), str(tmp_path / "hf"))
    suffix = task_names.SUFFIX_OF_KIND[kind]
    assert ENCODERS[encoder_name][2] + suffix in summary

    auto = getattr(transformers, AUTO[suffix])
    hf_model, info = auto.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(hf_model).__name__ == ENCODERS[encoder_name][2] + suffix
    hf_config = hf_model.config
    if kind in ("classification", "multi_label_classification", "token_classification", "multiple_choice"):
        assert [hf_config.id2label[i] for i in range(len(LABELS[kind]))] == list(LABELS[kind])
        assert hf_config.label2id == {name: i for i, name in enumerate(LABELS[kind])}
    if kind in task_names.PROBLEM_TYPE_OF_KIND:
        assert hf_config.problem_type == task_names.PROBLEM_TYPE_OF_KIND[kind]
        assert hf_config.num_labels == max(1, len(LABELS[kind]))

    inputs = _inputs(config, choices=3 if kind == "multiple_choice" else 0)
    ours, theirs = _ours(tmp_path / "model", inputs), _theirs(hf_model.eval(), inputs, kind)
    assert ours.shape == theirs.shape
    real = inputs[2] > 0 if kind in ("token_classification", "qa") else np.ones(ours.shape[:-1], bool)
    assert np.abs(ours[real] - theirs[real]).max() <= 1e-5


def test_roberta_sequence_classifier_head_is_our_pooler_and_classifier(tokenizer, tmp_path):
    """RoBERTa's classifier.dense/out_proj are our bert/pooler and classifier (HF has no pooler there)."""
    config = _config("roberta")
    _, params = _random_model(config, "classification")
    state_dict = task_names.to_hf_task_state_dict(params, config, "classification", LABELS["classification"],
                                                  pad_token_id=0, max_seq_length=SEQ)
    np.testing.assert_array_equal(state_dict["classifier.dense.weight"], params["bert"]["pooler"]["dense"]["kernel"].T)
    np.testing.assert_array_equal(state_dict["classifier.out_proj.bias"], params["classifier"]["bias"])
    assert not any("pooler" in name for name in state_dict)


def _randomize(hf_model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in hf_model.parameters():
            parameter.normal_(0.0, 0.3)
    return hf_model.eval()


def _write_bpe_vocab(directory):
    """A byte-level BPE vocabulary in RoBERTa's order (<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 4)."""
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [chr(ord("a") + i) for i in range(26)]
    (directory / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(pieces)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")


def test_hf_classifier_imports_and_predicts_the_same_labels(tokenizer, tmp_path):
    labels = ["sports", "politics", "science", "arts"]
    hf_config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=40, num_labels=4,
                                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    hf_model = _randomize(transformers.BertForSequenceClassification(hf_config))
    hf_model.save_pretrained(str(tmp_path / "hf"))
    hf_tokenizer = transformers.BertTokenizer(tokenizer.model_path, model_max_length=24)
    hf_tokenizer.save_pretrained(str(tmp_path / "hf"))  # transformers 5: tokenizer.json, no vocab.txt
    summary = hf_export.import_hf_finetuned(str(tmp_path / "hf"), str(tmp_path / "ours"))
    assert "classification" in summary

    loaded = model_dir.load(str(tmp_path / "ours"))
    assert loaded.task.kind == "classification" and loaded.task.label_names == tuple(labels)
    assert loaded.settings["max_seq_length"] == 24  # the tokenizer's model_max_length
    assert loaded.task.reading["text_column"] == "text" and loaded.info["format"] == "hf_import"
    text = "w1 w22 W7 w58 unknown"
    assert loaded.tokenizer.encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    inputs = _inputs(loaded.config)
    ours, theirs = _ours(tmp_path / "ours", inputs), _theirs(hf_model, inputs, "classification")
    assert np.abs(ours - theirs).max() <= 1e-5
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()

    # And out again: the same config fields and tensors transformers started from.
    hf_export.export_finetuned_hf(str(tmp_path / "ours"), str(tmp_path / "again"))
    again = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "again"))
    assert again.config.id2label == hf_model.config.id2label
    for name, value in hf_model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name].numpy(), value.numpy())


@pytest.mark.parametrize("problem_type,kind", [("multi_label_classification", "multi_label_classification"),
                                               ("regression", "regression")])
def test_roberta_problem_types_import_with_their_kind(problem_type, kind, tmp_path):
    num_labels = 3 if kind == "multi_label_classification" else 1
    hf_config = transformers.RobertaConfig(vocab_size=31, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64, max_position_embeddings=SEQ + 2, type_vocab_size=1,
                                           pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=num_labels,
                                           problem_type=problem_type)
    hf_model = _randomize(transformers.RobertaForSequenceClassification(hf_config))
    hf_model.save_pretrained(str(tmp_path / "hf"))
    (tmp_path / "vocab").mkdir()
    _write_bpe_vocab(tmp_path / "vocab")
    hf_tokenizer = transformers.RobertaTokenizer(str(tmp_path / "vocab" / "vocab.json"),
                                                 str(tmp_path / "vocab" / "merges.txt"))
    hf_tokenizer.save_pretrained(str(tmp_path / "hf"))  # transformers 5: tokenizer.json only
    hf_export.import_hf_finetuned(str(tmp_path / "hf"), str(tmp_path / "ours"))
    loaded = model_dir.load(str(tmp_path / "ours"))
    assert loaded.task.kind == kind and loaded.tokenizer.kind == "bpe"
    assert loaded.tokenizer.encode("a cab") == hf_tokenizer("a cab", add_special_tokens=False)["input_ids"]
    assert loaded.settings["max_seq_length"] == SEQ  # positions left after RoBERTa's pad_token_id + 1 offset
    input_ids, segment_ids, attention_mask = _inputs(loaded.config, pad=1)
    input_ids = np.minimum(input_ids, 30)
    inputs = (input_ids, segment_ids, attention_mask)
    ours, theirs = _ours(tmp_path / "ours", inputs), _theirs(hf_model, inputs, kind)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_commands_export_and_import_fine_tuned_models(tokenizer, tmp_path):
    config = _config("bert")
    _, params = _random_model(config, "token_classification")
    _save_model_dir(tmp_path / "workdir" / model_dir.MODEL_DIR, params, config, tokenizer, "token_classification")
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", *args], check=False, capture_output=True, text=True, env=env,
                              cwd=ROOT)

    refused = run("bert_jax.export", f"--workdir={tmp_path / 'workdir'}", f"--output={tmp_path / 'p'}")
    assert refused.returncode != 0
    assert "already a params-only export" in refused.stderr and "--format=hf" in refused.stderr
    done = run("bert_jax.export", f"--workdir={tmp_path / 'workdir'}", f"--output={tmp_path / 'hf'}", "--format=hf")
    assert done.returncode == 0, done.stderr
    assert "BertForTokenClassification" in done.stdout
    back = run("bert_jax.import_hf", f"--input={tmp_path / 'hf'}", f"--output={tmp_path / 'back'}")
    assert back.returncode == 0, back.stderr
    loaded = model_dir.load(str(tmp_path / "back"))
    assert loaded.task.kind == "token_classification" and loaded.task.label_names == LABELS["token_classification"]
    assert loaded.task.tag_scheme == "BIO" and loaded.settings["max_seq_length"] == SEQ
    inputs = _inputs(config)
    np.testing.assert_array_equal(_ours(tmp_path / "back", inputs), _ours(tmp_path / "workdir", inputs))


def test_import_refuses_a_checkpoint_without_its_head(tmp_path):
    hf_config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=16)
    state_dict = {k: v.numpy() for k, v in transformers.BertModel(hf_config).state_dict().items()}
    config = {**hf_config.to_dict(), "architectures": ["BertForTokenClassification"]}
    with pytest.raises(InputError, match="lacks the BertForTokenClassification head"):
        task_names.from_hf_task_state_dict(state_dict, config)
    assert task_names.task_kind({"architectures": ["BertForMaskedLM"]}) is None
    with pytest.raises(InputError, match="id2label has ids"):
        task_names.from_hf_task_state_dict(state_dict, {**config, "id2label": {"0": "O", "2": "B-PER"}})
