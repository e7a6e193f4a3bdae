"""Labels new text with a fine-tuned model directory (`model_dir.py`): reads any file in the task's formats,
runs the task model in length buckets, and writes one prediction per input row (`python -m bert_jax.predict`).

Length bucketing (`buckets.py`, shared with `embed`): rows are sorted by their real length (for multiple
choice the longest choice) and each batch is computed at its power-of-two bucket length, so the jitted
step compiles once per bucket. Per-token logits at padding are set to PAD_LOGIT, so neither tagging nor
QA span decoding can pick a padded position.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from bert_jax.config import InputError
from bert_jax.finetuning import (
    buckets,
    model_dir,
    own_tasks,
    qa,
    seed_run,
    steps,
    task_data,
)
from bert_jax.finetuning import features as features_lib
from bert_jax.runtime import atomic, parallel

PAD_LOGIT = -1e9  # per-token logits of padded positions: never the argmax, never a QA span end
OUTPUT_FORMATS = (".jsonl", ".csv", ".tsv", ".json")
_PER_TOKEN = ("token_classification", "qa")


class Predictor:
    """A fine-tuned model on the mesh with its jitted predict step; `logits` runs it in length buckets."""

    def __init__(self, model: model_dir.FinetunedModel, batch_size: int = 64, mesh_config=None):
        self.model, self.task = model, model.task
        self.mesh = parallel.make_mesh(mesh_config or ml_collections.ConfigDict({"data": -1}))
        if batch_size < 1:
            raise InputError(f"--batch_size must be at least 1, got {batch_size}.")
        devices = self.mesh.devices.size
        self.batch_size = -(-batch_size // devices) * devices  # a multiple of the devices the batch is split over
        self.max_seq_length = int(model.settings["max_seq_length"])
        encoder_config = ml_collections.ConfigDict(model.config.model.to_dict())
        if encoder_config.get("attention_impl") == "cudnn" and jax.default_backend() != "gpu":
            logging.info("the model was fine-tuned with cuDNN attention; predicting on %s with 'dot_product' "
                         "(the same computation)", jax.default_backend())
            encoder_config.attention_impl = "dot_product"
        sentence = model_dir.sentence_settings(model.settings)
        task_model = steps.build_task_model(encoder_config, self.task.kind, task_data.num_labels(self.task), seed=0,
                                            sentence=sentence)
        setup, self.params = steps.make_prediction_setup(task_model, self.task.kind, self.mesh, model.params,
                                                         sentence=sentence)
        self.predict_step = steps.make_predict_step(setup, self.mesh)
        self.config = ml_collections.ConfigDict({
            "data": {name: model.settings[name] for name in ("max_seq_length", "doc_stride", "max_query_length")},
            "qa": dict(model.settings["qa"]), "train": {"primary_metric": ""}})
        self.config.data.skip_bad_answers = False

    def features(self, examples) -> task_data.TaskFeatures:
        """The examples as arrays of the stored max_seq_length (QA: one row per context window)."""
        if not examples:
            raise InputError("the input file holds no examples; give at least one row to predict.")
        return task_data.featurize(self.task, examples, self.model.tokenizer, self.config, training=False)

    def logits(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, buckets.BucketStats]:
        """Logits of every row of `arrays` in input order, computed in length buckets; per-token logits
        come back at max_seq_length with PAD_LOGIT at padding."""
        mask = arrays["attention_mask"]
        lengths = buckets.real_lengths(mask)
        choices = mask.shape[1] if mask.ndim == 3 else 1
        stats = buckets.BucketStats(rows=len(lengths), real_tokens=int((mask > 0).sum()))
        outputs: np.ndarray | None = None
        with stats.timing(self.predict_step):
            for rows, real, bucket in buckets.sorted_batches(lengths, self.batch_size, self.max_seq_length):
                weights = (np.arange(self.batch_size) < real).astype(np.float32)
                sliced = {name: arrays[name][..., :bucket] for name in steps.MODEL_INPUTS}
                batch = seed_run.device_batch(sliced, steps.MODEL_INPUTS, rows, weights, self.mesh)
                out = np.asarray(jax.device_get(self.predict_step(self.params, batch)))[:real]
                if self.task.kind in _PER_TOKEN:  # [rows, bucket, ...] -> [rows, max_seq_length, ...]
                    out = self._full_length(out, mask[rows[:real]])
                if outputs is None:
                    outputs = np.zeros((len(lengths), *out.shape[1:]), out.dtype)
                outputs[rows[:real]] = out
                stats.add_batch(bucket, self.batch_size * choices, self.max_seq_length)
        return outputs, stats

    def _full_length(self, logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
        full = np.full((len(logits), self.max_seq_length, *logits.shape[2:]), PAD_LOGIT, logits.dtype)
        full[:, :logits.shape[1]] = logits
        full[mask == 0] = PAD_LOGIT
        return full


def predict_file(model_path: str, input_path: str, output_path: str, *, top_k: int = 1,
                 batch_size: int = 64, columns: dict[str, str] | None = None) -> dict[str, Any]:
    """Predicts every row of `input_path` with the fine-tuned model at `model_path` and writes them to
    `output_path` (.jsonl, .csv, .tsv; .json for QA); returns the throughput, bucketing and (when the input
    has labels) metrics report. `columns` renames what the model reads ({'text_column': 'body', ...})."""
    output_format = _output_format(output_path, input_path)
    if top_k < 1:
        raise InputError(f"--top_k must be at least 1, got {top_k}.")
    total_started = time.perf_counter()
    model = model_dir.load(model_path)
    if output_format == ".json" and model.task.kind != "qa":
        raise InputError(f"--output={output_path}: .json holds SQuAD-style {{id: answer}} predictions of a QA model; "
                         f"this model is {model.task.kind}: write .jsonl, .csv or .tsv.")
    predictor = Predictor(model, batch_size)
    task = _with_columns(model.task, columns or {})
    examples = own_tasks.examples_from_file(task, input_path, "predict", labelled=False, flag="--columns={}=")
    features = predictor.features(examples)
    logits, stats = predictor.logits(features.arrays)
    records = records_of(model.task, examples, features, logits, predictor.config, top_k)
    _write(output_path, output_format, records)
    report = {"model": model.path, "task": model.task.kind, "input": input_path, "output": output_path,
              "examples": len(examples), "rows": stats.rows, "batch_size": predictor.batch_size,
              "seconds": round(stats.seconds, 3),
              "examples_per_second": round(len(examples) / max(stats.seconds, 1e-9), 1),
              **stats.report()}
    if _labelled(model.task, examples, features):
        report["metrics"] = task_data.score(model.task, examples, features, logits, predictor.config)[0]
    report["total_seconds"] = round(time.perf_counter() - total_started, 3)
    return report


def _with_columns(task, columns: dict[str, str]):
    """The model's task reading the input's own column names."""
    unknown = sorted(set(columns) - set(own_tasks.READING_FIELDS) - {"file_format"})
    if unknown:
        raise InputError(f"--columns: {unknown[0]!r} is not a column setting; give any of "
                         f"{', '.join(f for f in own_tasks.READING_FIELDS if f.endswith('_column'))}, e.g. "
                         "--columns=text_column=body.")
    reading = dict(task.reading, **columns)
    if "choice_columns" in columns:
        reading["choice_columns"] = tuple(c for c in columns["choice_columns"].split("+") if c)
    return dataclasses.replace(task, reading=reading)


def parse_columns(value: str) -> dict[str, str]:
    """'text_column=body,label_column=gold' -> {'text_column': 'body', 'label_column': 'gold'}."""
    columns = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, equals, column = item.partition("=")
        if not equals:
            raise InputError(f"--columns: {item!r} is not setting=column; write e.g. --columns=text_column=body.")
        columns[name.strip()] = column.strip()
    return columns


def _output_format(output_path: str, input_path: str) -> str:
    if os.path.isdir(output_path):
        raise InputError(f"--output={output_path} is a directory; give a file name such as "
                         f"{os.path.join(output_path, 'predictions.jsonl')}.")
    if os.path.abspath(output_path) == os.path.abspath(input_path):
        raise InputError(f"--output is the --input file {input_path}; write the predictions to another file.")
    directory = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(directory):
        raise InputError(f"--output={output_path}: the directory {directory} does not exist; create it first.")
    extension = os.path.splitext(output_path)[1].lower()
    return extension if extension in OUTPUT_FORMATS else ".jsonl"


def _labelled(task, examples, features) -> bool:
    if own_tasks.label_view(task).kind == "sentence_embedding":  # in-batch rows are their own gold: rank them
        return len(examples) > 1
    if task.kind == "qa":
        return any(e.answers or e.is_impossible for e in examples)
    if task.kind == "token_classification":
        return any(e.labels is not None for e in examples)
    return bool(features.arrays["has_label"].any())


# ------------------------------------------------------------------ records


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def records_of(task, examples, features, logits: np.ndarray, config, top_k: int) -> list[dict[str, Any]]:
    """One JSON-able dict per example, in input order: its text fields and the prediction."""
    kind = task.kind
    if kind == "qa":
        return _qa_records(task, examples, features, logits, config, top_k)
    if kind == "token_classification":
        return _token_records(task, examples, features, logits)
    records = []
    for example, row in zip(examples, logits):
        if kind == "sentence_embedding":
            records.append(_sentence_record(task, example, row, top_k))
            continue
        if kind == "multiple_choice":
            record = {"context": example.context, "question": example.question, "choices": list(example.choices)}
            probabilities = _softmax(row)
            record.update(choice=int(probabilities.argmax()), probability=float(probabilities.max()),
                          probabilities=[float(p) for p in probabilities])
        else:
            record = {"text": example.text_a}
            if example.text_b is not None:
                record["text_pair"] = example.text_b
            record.update(_classification_fields(task, row, top_k))
        records.append(record)
    return records


def _sentence_record(task, example, row: np.ndarray, top_k: int) -> dict[str, Any]:
    """A sentence encoder's row: its texts and the class (softmax recipe), or the cosine of each later text
    with the first (the pair's similarity; for in-batch rows, the positive's and the negative's)."""
    record: dict[str, Any] = {"texts": list(example.texts)}
    if row.ndim == 1:  # the softmax recipe's class logits
        record.update(_classification_fields(own_tasks.label_view(task), row, top_k))
        return record
    unit = row / np.maximum(np.linalg.norm(row, axis=-1, keepdims=True), 1e-12)
    cosines = [float(unit[0] @ unit[i]) for i in range(1, len(unit))]
    record["cosine"] = cosines[0] if len(cosines) == 1 else cosines
    return record


def _classification_fields(task, row: np.ndarray, top_k: int) -> dict[str, Any]:
    names = task.label_names
    if task.kind == "regression":
        return {"score": float(row[0])}
    if task.kind == "multi_label_classification":
        probabilities = 1 / (1 + np.exp(-row.astype(np.float64)))
        chosen = [i for i in np.argsort(-probabilities, kind="stable") if probabilities[i] > 0.5]
        shown = list(dict.fromkeys(chosen + list(np.argsort(-probabilities, kind="stable")[:top_k])))
        return {"labels": [names[i] for i in chosen],
                "probabilities": {names[i]: float(probabilities[i]) for i in shown}}
    probabilities = _softmax(row)
    order = np.argsort(-probabilities, kind="stable")
    fields = {"label": names[order[0]], "probability": float(probabilities[order[0]])}
    if top_k > 1:
        fields["top_k"] = [{"label": names[i], "probability": float(probabilities[i])} for i in order[:top_k]]
    return fields


def _token_records(task, examples, features, logits: np.ndarray) -> list[dict[str, Any]]:
    """Words and their tags; each word's probability is its first sub-token's (None for words cut by
    max_seq_length, which are tagged 'O')."""
    word_index = features.arrays["word_index"]
    tags = features_lib.predicted_tags(examples, word_index, logits.argmax(-1), task.label_names)
    records = []
    for example, sentence, words_at, row in zip(examples, tags, word_index, logits):
        probabilities: list[float | None] = [None] * len(example.words)
        for position in np.flatnonzero(words_at >= 0):
            probabilities[words_at[position]] = float(_softmax(row[position]).max())
        records.append({"tokens": list(example.words), "tags": sentence, "probabilities": probabilities})
    return records


def _qa_records(task, examples, features, logits: np.ndarray, config, top_k: int) -> list[dict[str, Any]]:
    predictions, _, nbest = qa.decode_predictions(
        examples, features.qa, logits[..., 0], logits[..., 1], n_best_size=config.qa.n_best_size,
        max_answer_length=config.qa.max_answer_length, version_2_with_negative=task.version_2,
        null_score_diff_threshold=config.qa.null_score_diff_threshold)
    records = []
    for example in examples:
        answer, candidates = predictions[example.qid], nbest[example.qid]
        probability = next((c["probability"] for c in candidates if c["text"] == answer), 0.0)
        record = {"id": example.qid, "question": example.question, "answer": answer, "probability": probability}
        if top_k > 1:
            record["top_k"] = [{"answer": c["text"], "probability": c["probability"]} for c in candidates[:top_k]]
        records.append(record)
    return records


# ------------------------------------------------------------------ files


def _write(path: str, output_format: str, records: list[dict[str, Any]]) -> None:
    if output_format == ".json":  # the official SQuAD scripts' prediction file
        atomic.write_json(path, {r["id"]: r["answer"] for r in records}, indent=1, ensure_ascii=False)
        return
    if output_format == ".jsonl":
        atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return
    columns = list(dict.fromkeys(name for record in records for name in record))
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t" if output_format == ".tsv" else ",", lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([_cell(record.get(name)) for name in columns])
    atomic.write_text(path, text.getvalue())


def _cell(value) -> Any:
    """A flat column's value: scalars as they are, word and tag lists space-separated, the rest as JSON."""
    if value is None or isinstance(value, (str, int, float)):
        return "" if value is None else value
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and not any(" " in v for v in value):
        return " ".join(value)
    return json.dumps(value, ensure_ascii=False)
