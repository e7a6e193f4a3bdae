"""Import a Hugging Face BERT / RoBERTa / ALBERT directory as a bert_jax params-only export.

python -m bert_jax.import_hf --input=HF_DIR --output=DIR
The result is what fine-tuning and continued pretraining start from; heads the checkpoint lacks (a
bare encoder has no MLM or NSP head) are initialised fresh and listed, and so are unused HF tensors.
"""

import sys

from absl import app, flags, logging

from bert_jax import config as config_lib
from bert_jax import exporting, reporting

_INPUT = flags.DEFINE_string("input", None, "HF model directory (config.json, model.safetensors or "
                             "pytorch_model.bin, vocab.txt).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write the params-only export to.")
flags.mark_flags_as_required(["input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    reporting.quiet_library_logs()
    try:
        summary = exporting.import_hf_directory(_INPUT.value, _OUTPUT.value)
    except config_lib.InputError as e:
        sys.exit(f"error: {e}")
    print(summary)


if __name__ == "__main__":
    app.run(main)
