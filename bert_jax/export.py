"""Export a pretraining checkpoint: params-only (for fine-tuning) or a Hugging Face directory.

python -m bert_jax.export --workdir=RUN [--step=N] --output=DIR --format=params|hf
"""

import sys

from absl import app, flags, logging

from bert_jax import config as config_lib
from bert_jax import exporting, reporting

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining run directory (holds checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write (must not hold an export already).")
_FORMAT = flags.DEFINE_enum("format", "params", ["params", "hf"],
                            "params: params-only Orbax checkpoint + config + tokenizer; hf: transformers directory.")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    reporting.quiet_library_logs()
    try:
        summary = exporting.export_checkpoint(_WORKDIR.value, _OUTPUT.value, step=_STEP.value, fmt=_FORMAT.value)
    except config_lib.InputError as e:
        sys.exit(f"error: {e}")
    print(summary)


if __name__ == "__main__":
    app.run(main)
