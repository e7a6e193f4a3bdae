"""Hugging Face interop of fine-tuned task models: ours (`model/task_heads.py`) <-> transformers'
{Bert,Roberta,Albert}For{SequenceClassification,TokenClassification,QuestionAnswering,MultipleChoice}.

The encoder maps exactly as in `names.py` (the same tables, the same RoBERTa position shift); this module
adds the heads and the task fields of config.json (num_labels, id2label/label2id, problem_type).

  task kind                                   HF class suffix              HF head (ours)
  classification, multi_label_classification,  ForSequenceClassification  pooler + classifier
    regression
  token_classification                         ForTokenClassification     classifier (no pooler)
  qa                                           ForQuestionAnswering       qa_outputs (no pooler)
  multiple_choice                              ForMultipleChoice          pooler + classifier (1 output)

RobertaForSequenceClassification has no pooler: its head is classifier.dense + tanh on the <s> token, then
classifier.out_proj. That is our pooler (dense + tanh on [CLS]) + classifier, so our bert/pooler maps to
classifier.dense and our classifier to classifier.out_proj. Which encoder family a model is
(`task_model_type`) follows `names.hf_architecture`, without its pretraining-head limits: factorized or
shared layers, or the SOP objective -> ALBERT; the MLM-only objective -> RoBERTa; otherwise BERT.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
from flax import nnx

from bert_jax.config import InputError
from bert_jax.hf import names as hf_names
from bert_jax.model import encoder, task_heads

SUFFIX_OF_KIND = {
    "classification": "ForSequenceClassification",
    "multi_label_classification": "ForSequenceClassification",
    "regression": "ForSequenceClassification",
    "token_classification": "ForTokenClassification",
    "qa": "ForQuestionAnswering",
    "multiple_choice": "ForMultipleChoice",
}
# HF's config.problem_type of the sequence-classification kinds (it picks the loss by it).
PROBLEM_TYPE_OF_KIND = {"classification": "single_label_classification",
                        "multi_label_classification": "multi_label_classification", "regression": "regression"}
_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert"}
_POOLED = ("classification", "multi_label_classification", "regression", "multiple_choice")
_HEAD = "head"  # part name of every head tensor (the pooler included): all of it or an error
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")  # the names HF gives labels nobody named


class HFTaskCheckpoint(NamedTuple):
    """What `from_hf_task_state_dict` read.

    config_overrides: {"model": {...}, "objective": str}, for `config.update(...)` of a pretraining config.
    kind: our task kind; label_names: in id order (empty for regression and QA).
    params: the task model's pure parameter dict; unexpected_keys: HF tensors that were not used.
    """
    config_overrides: dict
    kind: str
    label_names: tuple[str, ...]
    params: dict
    unexpected_keys: list


def task_model_type(config) -> str:
    """bert | roberta | albert: the HF family that represents `config.model` + `config.objective` exactly."""
    m = encoder.BertConfig.from_config(config.model)
    hf_names.check_bert_block(m, "BERT-family task")
    if m.type_vocab_size == 0:  # DistilBERT's classifier is pre_classifier + ReLU, ours pooler + tanh
        raise InputError("a fine-tuned model without a segment table (config.model.type_vocab_size=0, a DistilBERT "
                         "student) has no transformers task class that computes it; use it with bert_jax.predict.")
    if m.factorized or m.num_hidden_groups > 0 or config.objective == "mlm_sop":
        return "albert"
    return "roberta" if config.objective == "mlm" else "bert"


def task_architecture(model_type: str, kind: str) -> str:
    """The HF class name, e.g. RobertaForTokenClassification."""
    if kind not in SUFFIX_OF_KIND:
        raise InputError(f"task kind {kind!r} is not one of {tuple(SUFFIX_OF_KIND)}.")
    return _CLASS_PREFIX[model_type] + SUFFIX_OF_KIND[kind]


def head_width(kind: str, label_names) -> int:
    """Outputs of our head: one per label, 1 for regression and multiple choice, start + end for QA."""
    if kind in ("classification", "multi_label_classification", "token_classification"):
        if not label_names:
            raise InputError(f"a {kind} model needs its label names (the task's label_names is empty).")
        return len(label_names)
    return {"regression": 1, "qa": 2, "multiple_choice": 1}[kind]


def _head_modules(model_type: str, kind: str) -> list[tuple]:
    """(part, HF module name, our path, kind) of the head of `kind` in HF's `model_type` class."""
    if kind == "qa":
        return [(_HEAD, "qa_outputs", ("qa_outputs",), "dense")]
    if kind not in _POOLED:
        return [(_HEAD, "classifier", ("classifier",), "dense")]
    if model_type == "roberta" and kind != "multiple_choice":
        pooler, classifier = "classifier.dense", "classifier.out_proj"
    else:
        pooler = "albert.pooler" if model_type == "albert" else f"{model_type}.pooler.dense"
        classifier = "classifier"
    return [(_HEAD, pooler, ("bert", "pooler", "dense"), "dense"), (_HEAD, classifier, ("classifier",), "dense")]


def _table(model_type: str, kind: str, m: encoder.BertConfig) -> list[hf_names.Row]:
    return hf_names.tensor_rows(hf_names.encoder_modules(model_type, m) + _head_modules(model_type, kind))


def _expected_shapes(m: encoder.BertConfig, kind: str, width: int) -> dict:
    """Our task model's parameter shapes (no allocation)."""
    abstract = nnx.eval_shape(lambda: task_heads.TASK_MODELS[kind](m, width, rngs=nnx.Rngs(0)))
    return nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def to_hf_task_state_dict(params: dict, config, kind: str, label_names, *, pad_token_id: int,
                          max_seq_length: int) -> dict[str, np.ndarray]:
    """Our task model's pure params -> {HF tensor name: float32 array} of `task_architecture(...)`.

    `pad_token_id` must be the one written to config.json (RoBERTa's positions are shifted by it) and
    `max_seq_length` the model's, so that a RoBERTa export whose positions would not fit is refused.
    """
    model_type = task_model_type(config)
    m = encoder.BertConfig.from_config(config.model)
    if model_type == "roberta":
        hf_names.check_roberta_positions(m, max_seq_length, pad_token_id)
    shapes = _expected_shapes(m, kind, head_width(kind, label_names))
    return hf_names.params_to_tensors(_table(model_type, kind, m), params, shapes, m, pad_token_id=pad_token_id)


def hf_task_config_dict(config, kind: str, label_names, *, pad_token_id: int, bos_token_id: int | None = None,
                        eos_token_id: int | None = None) -> dict:
    """config.json of the task model: the encoder's fields, the architecture, num_labels, id2label/label2id
    (our label names in id order; HF's LABEL_i where a kind has no names) and, for sequence
    classification, problem_type."""
    model_type = task_model_type(config)
    m = encoder.BertConfig.from_config(config.model)
    width = head_width(kind, label_names)
    names = list(label_names) if label_names and kind != "regression" else []
    if kind == "multiple_choice":  # one score per choice; HF ignores num_labels here
        width = len(names) or 2
    elif kind in ("regression", "qa"):
        names = []
    names = names or [f"LABEL_{i}" for i in range(width)]
    result = {"architectures": [task_architecture(model_type, kind)], **hf_names.encoder_config_dict(
        m, model_type, pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)}
    result.update(num_labels=len(names), id2label={str(i): name for i, name in enumerate(names)},
                  label2id={name: i for i, name in enumerate(names)})
    if kind in PROBLEM_TYPE_OF_KIND:
        result["problem_type"] = PROBLEM_TYPE_OF_KIND[kind]
    return result


def task_kind(hf_config: dict) -> str | None:
    """Our task kind of an HF config.json's architecture (and problem_type), or None for any other class."""
    architectures = hf_config.get("architectures") or []
    suffixes = {suffix for suffix in SUFFIX_OF_KIND.values()
                if any(str(name).endswith(suffix) for name in architectures)}
    if not suffixes:
        return None
    suffix = suffixes.pop()
    if suffix != "ForSequenceClassification":
        return {value: key for key, value in SUFFIX_OF_KIND.items()}[suffix]
    problem_type = hf_config.get("problem_type")
    for kind, name in PROBLEM_TYPE_OF_KIND.items():
        if problem_type == name:
            return kind
    if problem_type is not None:
        raise InputError(f"config.json problem_type={problem_type!r} is not one of "
                         f"{tuple(PROBLEM_TYPE_OF_KIND.values())}.")
    return "regression" if _num_labels(hf_config) == 1 else "classification"  # as HF's loss decides


def _num_labels(hf_config: dict) -> int:
    id2label = hf_config.get("id2label")
    return len(id2label) if id2label else int(hf_config.get("num_labels", 2))


def _label_names(hf_config: dict, kind: str) -> tuple[str, ...]:
    """id2label's names in id order; empty for regression and QA, and for HF's unnamed choices."""
    if kind in ("regression", "qa"):
        return ()
    id2label = hf_config.get("id2label") or {}
    try:
        by_id = {int(key): str(name) for key, name in id2label.items()}
    except (TypeError, ValueError):
        raise InputError(f"config.json id2label keys must be label ids 0, 1, ...; got "
                         f"{sorted(id2label)[:10]}.") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise InputError(f"config.json id2label has ids {sorted(by_id)[:10]}, not 0..{len(by_id) - 1}; "
                         "give every label id from 0 up once.")
    names = tuple(by_id[i] for i in range(len(by_id)))
    if not names:
        names = tuple(f"LABEL_{i}" for i in range(_num_labels(hf_config)))
    if len(set(names)) != len(names):
        raise InputError(f"config.json id2label names a label twice: {list(names)[:20]}; give each id its own name.")
    if kind == "multiple_choice" and all(_DEFAULT_LABEL.match(name) for name in names):
        return ()
    return names


def from_hf_task_state_dict(state_dict: dict[str, np.ndarray], hf_config: dict) -> HFTaskCheckpoint:
    """An HF task model's checkpoint (`task_kind(hf_config)` not None) -> our config fields, kind, label
    names and task model params. Every tensor of the encoder and head must be there, with its shape."""
    kind = task_kind(hf_config)
    if kind is None:
        raise InputError(f"config.json architectures={hf_config.get('architectures')} names no task model class "
                         f"(*{', *'.join(dict.fromkeys(SUFFIX_OF_KIND.values()))}).")
    model_type = hf_config["model_type"]
    if model_type not in hf_names.OBJECTIVE_OF_TYPE:  # electra, distilbert, modernbert: their task heads are not ours
        pretrained = {"distilbert": "DistilBertForMaskedLM", "modernbert": "ModernBertForMaskedLM"}.get(
            model_type, "ElectraForPreTraining discriminator")
        raise InputError(f"config.json architectures={hf_config.get('architectures')}: fine-tuned {model_type} task "
                         f"models cannot be imported (their heads differ from bert_jax's); import the pretrained "
                         f"{pretrained} with bert_jax.import_hf and fine-tune it here.")
    overrides = hf_names.model_overrides(hf_config, lm_head=False)
    m = encoder.BertConfig(**overrides)
    hf_names.check_heads_divide(m)
    label_names = _label_names(hf_config, kind)
    tensors = hf_names.canonical_names(state_dict, model_type + ".")
    table = _table(model_type, kind, m)
    params, missing = hf_names.tensors_to_params(
        table, tensors, _expected_shapes(m, kind, head_width(kind, label_names)), m, model_type,
        pad_token_id=hf_config.get("pad_token_id", 1))
    if missing:
        absent = [row.hf_name for row in table if row.part in missing]
        raise InputError(f"checkpoint lacks the {hf_config['architectures'][0]} head ({', '.join(absent)}); "
                         "it is not a fine-tuned model: import it as an encoder by fine-tuning from it.")
    return HFTaskCheckpoint({"model": overrides, "objective": hf_names.OBJECTIVE_OF_TYPE[model_type]}, kind,
                            label_names, params, hf_names.unused_tensors(table, tensors, model_type))
