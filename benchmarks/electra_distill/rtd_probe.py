"""How much the ELECTRA discriminator of a run really detects, beyond the majority class.

python benchmarks/electra_distill/rtd_probe.py RUN_WORKDIR

Replays the held-out evaluation exactly as the trainer does (same batches, masks and generator samples from
config.data.eval_seed) and reports, over the real tokens: rtd accuracy, the all-"original" baseline
(1 - replaced fraction), ROC AUC of the discriminator logits (replaced vs original), the mean logit of each
class, and precision / recall of "replaced" at threshold 0.
"""

import json
import sys
import tempfile

import jax
import numpy as np
from flax import nnx

from bert_jax.data import corpus as corpus_lib
from bert_jax.pretraining import electra, evaluation, run_checkpoint, steps


def main(workdir):
    run = run_checkpoint.restore_run_checkpoint(workdir)
    config, setup = run.config, run.setup
    with tempfile.TemporaryDirectory():
        _, sources = corpus_lib.prepare_default_or_given(config.data, workdir, tokenizer=run.tokenizer)
        batches = evaluation.eval_batches(sources["eval"], config, run.mesh, run.tokenizer.special_ids)

    @jax.jit
    def probe(params, batch, key):
        key, sample_key = jax.random.split(key)
        masked = steps.mask_batch(setup, batch, key)
        model = nnx.merge(setup.graphdef, params)
        gen = model.generator_logits(masked.input_ids, batch["segment_ids"], batch["attention_mask"],
                                     masked.masked_positions, deterministic=True)
        sampled = electra.sample_replacements(sample_key, gen, setup.electra.sampleable, setup.electra.temperature)
        ids, replaced = electra.replace_tokens(batch["input_ids"], masked.masked_positions, masked.masked_lm_weights,
                                               sampled)
        logits = model.discriminator_logits(ids, batch["segment_ids"], batch["attention_mask"], deterministic=True)
        weights = (batch["attention_mask"] > 0) * (batch["example_weights"][:, None] > 0)
        return logits, replaced, weights

    base_key = jax.random.key(config.data.eval_seed)
    logits, labels = [], []
    for index, batch in enumerate(batches):
        lg, rp, w = jax.device_get(probe(run.state.params, batch, jax.random.fold_in(base_key, index)))
        logits.append(lg[w > 0])
        labels.append(rp[w > 0])
    logits, labels = np.concatenate(logits), np.concatenate(labels).astype(bool)
    order = np.argsort(logits, kind="stable")
    ranks = np.empty(len(logits))
    ranks[order] = np.arange(1, len(logits) + 1)
    pos, neg = labels.sum(), (~labels).sum()
    auc = (ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg)
    predicted = logits > 0
    print(json.dumps({
        "step": run.step, "tokens": int(len(labels)), "replaced_fraction": float(labels.mean()),
        "rtd_accuracy": float((predicted == labels).mean()), "majority_baseline": float(1 - labels.mean()),
        "roc_auc": float(auc), "mean_logit_replaced": float(logits[labels].mean()),
        "mean_logit_original": float(logits[~labels].mean()), "predicted_replaced": int(predicted.sum()),
        "precision": float((predicted & labels).sum() / max(predicted.sum(), 1)),
        "recall": float((predicted & labels).sum() / max(pos, 1))}))


if __name__ == "__main__":
    main(sys.argv[1])
