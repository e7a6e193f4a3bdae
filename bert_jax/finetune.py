"""Fine-tune a pretrained encoder on a task:

  python -m bert_jax.finetune --config=configs/finetune/sst2.py --config.init_checkpoint=EXPORT --workdir=DIR

Only flag wiring lives here; the work is `bert_jax.finetuning.runner.finetune`. Writes DIR/metrics.json,
the model directory DIR/model (what `predict` and `export` read) and, per seed, DIR/seed_N/predictions_<split>.*,
DIR/seed_N/best_params and its checkpoints (a killed fine-tune resumes from them).
"""

import json

from absl import flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax.finetuning import runner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a fine-tuning config (configs/finetune/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory: metrics.json, predictions, best parameters.")
_INITIALIZE_DISTRIBUTED = cli.define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])
cli.refuse_empty("workdir")


def _finetune():
    _INITIALIZE_DISTRIBUTED()
    report = runner.finetune(_CONFIG.value, _WORKDIR.value)
    if report.get("preempted"):
        return report
    keys = ("task", "primary_metric", "summary", "test", "model_dir")
    return {key: report[key] for key in keys if key in report}


def main(argv):
    print(json.dumps(cli.run(argv, _finetune)))


if __name__ == "__main__":
    cli.run_app(main, huge_pages=True)
