"""Import a Hugging Face BERT / RoBERTa / ALBERT directory as a bert_jax params-only export.

python -m bert_jax.import_hf --input=HF_DIR --output=DIR
The result is what fine-tuning and continued pretraining start from; heads the checkpoint lacks (a
bare encoder has no MLM or NSP head) are initialised fresh and listed, and so are unused HF tensors.
"""

from absl import flags

from bert_jax import cli
from bert_jax.hf import convert as hf_convert

_INPUT = flags.DEFINE_string("input", None, "HF model directory (config.json, model.safetensors or "
                             "pytorch_model.bin, vocab.txt).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write the params-only export to.")
flags.mark_flags_as_required(["input", "output"])
cli.refuse_empty("input", "output")


def main(argv):
    print(cli.run(argv, lambda: hf_convert.import_hf_directory(_INPUT.value, _OUTPUT.value)))


if __name__ == "__main__":
    cli.run_app(main)
