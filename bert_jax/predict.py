"""Label new text with a fine-tuned model:

  python -m bert_jax.predict --model=FINETUNE_WORKDIR --input=new.csv --output=predictions.jsonl --top_k=3

`--model` is a fine-tune's workdir or its model/ directory; `--input` any file in the task's formats (CSV,
TSV, JSON Lines; CoNLL for tagging; SQuAD JSON for QA), read with the columns the model was trained on.
`--output` by extension: .jsonl (one object per input row), .csv / .tsv (flat columns), .json for QA
({id: answer}, the official SQuAD scripts' input). Only flag wiring lives here; the work is
`bert_jax.finetuning.prediction.predict_file`. Prints one JSON line: throughput, length buckets, compiles,
padding, and the metrics when the input has labels.
"""

import json

from absl import flags

from bert_jax import cli
from bert_jax.finetuning import prediction

_MODEL = flags.DEFINE_string("model", None, "A fine-tune's workdir or its model/ directory.")
_INPUT = flags.DEFINE_string("input", None, "The text to label: CSV, TSV, JSON Lines, CoNLL or SQuAD JSON.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the predictions: .jsonl, .csv, .tsv (.json for QA).")
_TOP_K = flags.DEFINE_integer("top_k", 1, "Labels (or answers) with their probabilities per row; 1: the best only.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Rows per forward pass (rounded up to a multiple of the "
                                   "devices).")
_COLUMNS = flags.DEFINE_string("columns", "", "The input's own column names where they differ from the training "
                               "files', e.g. text_column=body,label_column=gold (choices: choice_columns=a+b+c).")
flags.mark_flags_as_required(["model", "input", "output"])
cli.refuse_empty("model", "input", "output")


def _predict():
    return prediction.predict_file(_MODEL.value, _INPUT.value, _OUTPUT.value, top_k=_TOP_K.value,
                                   batch_size=_BATCH_SIZE.value, columns=prediction.parse_columns(_COLUMNS.value))


def main(argv):
    print(json.dumps(cli.run(argv, _predict)))


if __name__ == "__main__":
    cli.run_app(main)
