"""Held-out MLM/NSP metrics of a checkpoint on any corpus.

python -m bert_jax.evaluate --workdir=RUN [--step=N] [--corpus=TEXT_FILES]
Prints a readable line and, as the last line, one JSON object with mlm_accuracy, mlm_loss, the pair
task's accuracy (nsp_accuracy for BERT, sop_accuracy for ALBERT; none for RoBERTa's MLM-only objective),
SpanBERT's sbo_accuracy and sbo_loss, num_examples and step; a multilingual run adds mlm_accuracy/<language>
and mlm_loss/<language>. Without --corpus it uses the run's own held-out split; --corpus may be
language-tagged ('en:a.txt,ru:b.txt').
"""

import json

from absl import flags

from bert_jax import cli
from bert_jax.pretraining import evaluation
from bert_jax.runtime import reporting

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining run directory (holds checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_CORPUS = flags.DEFINE_string("corpus", "", "Text files (file, directory or glob); default: the run's held-out split.")
flags.mark_flags_as_required(["workdir"])
cli.refuse_empty("workdir")


def main(argv):
    metrics = cli.run(argv, lambda: evaluation.evaluate_checkpoint(_WORKDIR.value, step=_STEP.value,
                                                                   corpus=_CORPUS.value))
    print(reporting.eval_log_line(metrics["step"], metrics))
    keys = ("mlm_accuracy", "mlm_loss", "nsp_accuracy", "sop_accuracy", "sbo_accuracy", "sbo_loss", "num_examples",
            "step")
    by_language = [k for k in metrics if k.startswith(("mlm_accuracy/", "mlm_loss/"))]  # multilingual runs
    print(json.dumps({k: metrics[k] for k in (*keys, *by_language) if k in metrics}))


if __name__ == "__main__":
    cli.run_app(main)
