"""A trained sentence encoder as `encode(texts) -> [n, hidden]`, and the evaluations a sentence_embedding
fine-tune adds to its metrics: STS (Spearman of cosine against gold scores) and BEIR-layout retrieval.

Texts are sorted by length and each batch is cut to its bucket (`buckets.py`, as `embed` and `predict` do): a
few compiled shapes, reused, and little padding; the vectors come back in input order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bert_jax.finetuning import buckets, features, own_tasks, retrieval, seed_run, steps
from bert_jax.finetuning.task_files import SentenceExample


class SentenceEncoder:
    """The bi-encoder of a sentence_embedding task model (its classifier, if any, left out)."""

    def __init__(self, model_config, params: dict, tokenizer, sentence, mesh, *, max_seq_length: int,
                 batch_size: int):
        encoder_params = {name: value for name, value in params.items() if name != "classifier"}
        model = steps.build_task_model(model_config, "sentence_embedding", 0, seed=0, sentence=sentence)
        setup, self.params = steps.make_prediction_setup(model, "sentence_embedding", mesh, encoder_params)
        self.predict_step = steps.make_predict_step(setup, mesh)
        self.tokenizer, self.mesh = tokenizer, mesh
        self.max_seq_length, self.batch_size = max_seq_length, batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        examples = [SentenceExample(guid=str(i), texts=(text,), label=None) for i, text in enumerate(texts)]
        arrays = features.sentence_features(examples, self.tokenizer, self.max_seq_length, scores=False)
        vectors = None
        for rows, real, width in buckets.sorted_batches(buckets.real_lengths(arrays["attention_mask"]),
                                                       self.batch_size, self.max_seq_length):
            chunk = {name: arrays[name][rows][..., :width] for name in steps.MODEL_INPUTS}
            out = seed_run.predict_logits(self.predict_step, self.params, chunk, self.batch_size, self.mesh)[:, 0]
            if vectors is None:
                vectors = np.zeros((len(texts), out.shape[-1]), np.float32)
            vectors[rows[:real]] = out[:real]
        return vectors


def evaluations(encode, sentence, task) -> dict:
    """The STS and retrieval figures `config.sentence` asks for ({} when it names no evaluation set)."""
    results = {}
    if sentence.eval_sts_file:  # read like the task's own pair files, the label column as a gold score
        scored = dataclasses.replace(task, reading={**task.reading, "sentence_loss": "cosine_similarity",
                                                    "negative_column": ""})
        examples = own_tasks.examples_from_file(scored, sentence.eval_sts_file, "sts", labelled=True,
                                                flag="--config.data.{}=")
        results["sts"] = retrieval.evaluate_sts(encode, [e.texts[0] for e in examples], [e.texts[1] for e in examples],
                                                np.asarray([e.label for e in examples], np.float64))
    if sentence.eval_beir_dir:
        results["retrieval"] = retrieval.evaluate_retrieval(encode, sentence.eval_beir_dir, split=sentence.eval_beir_split)
    return results
