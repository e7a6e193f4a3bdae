"""Export a pretraining checkpoint: params-only (for fine-tuning) or a Hugging Face directory.

python -m bert_jax.export --workdir=RUN [--step=N] --output=DIR --format=params|hf
"""

from absl import flags

from bert_jax import cli
from bert_jax.hf import convert as hf_convert
from bert_jax.pretraining import run_checkpoint

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining run directory (holds checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write (must not hold an export already).")
_FORMAT = flags.DEFINE_enum("format", "params", ["params", "hf"],
                            "params: params-only Orbax checkpoint + config + tokenizer; hf: transformers directory.")
flags.mark_flags_as_required(["workdir", "output"])
cli.refuse_empty("workdir", "output")


def main(argv):
    export = hf_convert.export_hf if _FORMAT.value == "hf" else run_checkpoint.export_params
    print(cli.run(argv, lambda: export(_WORKDIR.value, _OUTPUT.value, step=_STEP.value)))


if __name__ == "__main__":
    cli.run_app(main)
