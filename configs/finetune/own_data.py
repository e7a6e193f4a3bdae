"""Your own labelled files, no code: set the task kind and the files (CSV, TSV, JSON Lines; CoNLL columns
for tagging; SQuAD JSON for QA). Column names default to text / text_pair / label / tokens / tags.

  python -m bert_jax.finetune --config=configs/finetune/own_data.py --config.init_checkpoint=EXPORT \
      --config.task=classification --config.data.train_file=train.tsv \
      --config.data.validation_file=dev.tsv --config.data.test_file=test.tsv --workdir=/tmp/mine

config.task: classification | multi_label_classification | regression | token_classification | qa |
multiple_choice. The label set is read from the training file (sorted) unless config.data.label_names
lists it; every column and reading setting is in bert_jax/finetuning/config.py under `data`.
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "classification"
    return config
