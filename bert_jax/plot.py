"""Plot a pretraining run's metrics: python -m bert_jax.plot --workdir=RUN [--output=PATH].

Writes one PNG with 2x2 panels (loss; MLM and NSP/SOP accuracy; learning rate; throughput in
sequences/s) against step, from <workdir>/metrics.jsonl: train intervals as lines, evaluations as
markers. Default output: <workdir>/plots/metrics.png; --output takes a .png file or a directory. Prints
the path written. Works on a run in progress.
"""

from absl import flags

from bert_jax import cli
from bert_jax.tools import plotting

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining run directory (holds metrics.jsonl).")
_OUTPUT = flags.DEFINE_string("output", "", "A .png file, or a directory to write metrics.png in "
                              "(default: <workdir>/plots/metrics.png).")
flags.mark_flags_as_required(["workdir"])
cli.refuse_empty("workdir")


def main(argv):
    print(cli.run(argv, lambda: plotting.write_plots(_WORKDIR.value, _OUTPUT.value)))


if __name__ == "__main__":
    cli.run_app(main)
