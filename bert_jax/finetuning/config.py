"""The fine-tuning config: one ConfigDict shape for every task, with the BERT paper's defaults.

Files under configs/finetune/ set `task` (a benchmark from `bert_jax.finetuning.tasks.TASKS`, or a task kind
for the user's own files, see `own_tasks.py`) and the few values that differ per task; everything can be
overridden on the command line, e.g. `--config.init_checkpoint=/tmp/export --config.train.learning_rate=3e-5`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bert_jax.config import InputError, check_against_schema

TAG_SCHEMES = ("auto", "BIO", "IOB1", "IOBES")
FILE_FORMATS = ("", "csv", "tsv", "jsonl", "conll", "squad")

# Encoder fields a fine-tuning run may override; the rest of the encoder comes from the checkpoint.
# Dropout and compute dtype are the usual ones; a shape field that differs from the checkpoint is refused.
_MODEL_FIELDS = {"hidden_dropout_prob": float, "attention_probs_dropout_prob": float, "dtype": str,
                 "vocab_size": int, "hidden_size": int, "num_hidden_layers": int, "num_attention_heads": int,
                 "intermediate_size": int, "max_position_embeddings": int, "embedding_size": int,
                 "num_hidden_groups": int,
                 # Speed switches (see bert_jax/config.py): a checkpoint pretrained with 'cudnn' attention
                 # fine-tunes on a CPU with attention_impl='xla'.
                 "attention_impl": str, "scan_layers": bool, "remat_policy": str}


def default_config() -> ml_collections.ConfigDict:
    """The fields every fine-tuning config has; task files override `task` and a few others."""
    config = ml_collections.ConfigDict()
    # A benchmark (glue tasks, conll2003, squad_v1.1, squad_v2.0, swag: bert_jax.finetuning.tasks.TASKS), or
    # the kind of a task on your own files (classification, multi_label_classification, regression,
    # token_classification, qa, multiple_choice, sentence_embedding) read from config.data.train_file and friends.
    config.task = "sst2"
    # A params-only export (bert_jax.export --format=params, bert_jax.import_hf) or a pretraining workdir.
    config.init_checkpoint = ""

    # Encoder overrides (empty: the checkpoint's value).
    config.model = ml_collections.ConfigDict({name: config_dict.placeholder(kind)
                                              for name, kind in _MODEL_FIELDS.items()})

    config.data = ml_collections.ConfigDict()
    # Local files in the task's standard format (GLUE TSV, CoNLL columns, SQuAD JSON, SWAG CSV); empty:
    # read the task's TFDS dataset from `tfds_data_dir` (it must already be prepared there).
    config.data.data_dir = ""
    config.data.tfds_data_dir = ""
    # Your own task's files (CSV, TSV or JSON Lines with a header naming the columns; CoNLL columns for
    # token_classification; SQuAD JSON for qa). The format follows the extension unless file_format is set.
    config.data.train_file = ""
    config.data.validation_file = ""  # the best checkpoint is chosen on it (empty: the last step is kept)
    config.data.test_file = ""  # scored with the checkpoint chosen on validation when it has labels
    config.data.file_format = ""  # '' (from the extension) | csv | tsv | jsonl | conll | squad
    config.data.text_column = "text"
    config.data.text_pair_column = ""  # set for sentence-pair tasks
    config.data.label_column = "label"
    config.data.label_names = ()  # empty: every label of the training file, sorted (numbers numerically)
    config.data.label_separator = ","  # multi-label cells in CSV/TSV: 'a,b' (JSON Lines: a list)
    config.data.tokens_column = "tokens"  # token_classification in CSV/TSV/JSONL (a list, or space-separated)
    config.data.tags_column = "tags"
    config.data.tag_scheme = "auto"  # BIO | IOB1 | IOBES | auto (read from the training tags)
    config.data.negative_column = ""  # sentence_embedding: a hard negative beside text and text_pair (optional)
    config.data.context_column = "context"  # multiple_choice: the shared first segment
    config.data.question_column = ""  # multiple_choice: prefixed to every choice (optional)
    config.data.choice_columns = ()  # multiple_choice: empty: a 'choices' list, or columns choice0/ending0, ...
    config.data.max_seq_length = 128
    config.data.max_train_examples = 0  # > 0: use only the first N training examples (quick runs)
    config.data.max_eval_examples = 0  # > 0: only the first N dev (and test) examples
    # SQuAD: question tokens kept, and the step between the overlapping context windows.
    config.data.max_query_length = 64
    config.data.doc_stride = 128
    # SQuAD training questions whose answer is not at its answer_start: an error (False) or left out (True).
    config.data.skip_bad_answers = False

    config.train = ml_collections.ConfigDict()
    config.train.global_batch_size = 32
    config.train.eval_batch_size = 64
    config.train.num_train_epochs = 3.0
    config.train.learning_rate = 2e-5
    config.train.warmup_proportion = 0.1  # of the training steps, linear warmup; then linear decay to 0
    config.train.weight_decay = 0.01
    config.train.adam_b1 = 0.9
    config.train.adam_b2 = 0.999
    config.train.adam_eps = 1e-6
    config.train.max_grad_norm = 1.0
    config.train.seed = 0
    config.train.num_seeds = 1  # > 1: repeat with seeds seed, seed+1, ... and report mean and spread
    config.train.log_every_steps = 50
    config.train.evals_per_epoch = 1  # dev evaluations per epoch; the best one is kept
    config.train.primary_metric = ""  # the dev metric the best checkpoint maximises ('' = the task's own)
    # Steps whose loss or gradient is NaN/inf are skipped; this many in a row stops the run (0: never).
    config.train.max_consecutive_nonfinite_steps = 50

    # A killed fine-tune resumes from its newest checkpoint (written at every evaluation, every
    # `every_steps` steps when > 0, and on SIGTERM / Ctrl-C).
    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 0
    config.checkpoint.max_to_keep = 1

    # SQuAD span decoding, as in google-research/bert's run_squad.py.
    config.qa = ml_collections.ConfigDict()
    config.qa.n_best_size = 20
    config.qa.max_answer_length = 30
    config.qa.null_score_diff_threshold = 0.0  # v2.0: predict no answer when null - best span > this

    # Sentence embeddings (task 'sentence_embedding', Sentence-BERT): a bi-encoder that encodes each text alone.
    # loss: 'multiple_negatives_ranking' (rows text -> text_pair [-> negative_column]: every other row's texts
    # of the *global* batch are negatives, gathered from all devices), 'cosent' or 'cosine_similarity' (pairs
    # with a gold similarity score in label_column), 'softmax' (pairs with a class label, SBERT's NLI recipe:
    # a classifier on (u, v, |u - v|), dropped when the encoder is used).
    config.sentence = ml_collections.ConfigDict()
    config.sentence.loss = "multiple_negatives_ranking"
    config.sentence.scale = 20.0  # cosine similarities are multiplied by this (ranking losses and CoSENT)
    config.sentence.symmetric = False  # multiple_negatives_ranking: also each positive picks its anchor
    config.sentence.pooling = "mean"  # mean | cls | max
    config.sentence.normalize = True  # unit-length output vectors
    # > 1: gradient caching in this many chunks of the global batch (memory of one chunk; same gradients).
    config.sentence.gradient_cache_chunks = 0
    # Evaluations of the chosen model, reported in metrics.json under "sentence_evaluation": an STS file (pairs in
    # text_column / text_pair_column with a gold score in label_column: Spearman and Pearson of the cosine) and
    # a BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv: nDCG@10, MRR@10, Recall@100).
    config.sentence.eval_sts_file = ""
    config.sentence.eval_beir_dir = ""
    config.sentence.eval_beir_split = "test"

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    return config


SENTENCE_LOSSES = ("multiple_negatives_ranking", "cosent", "cosine_similarity", "softmax")
SENTENCE_POOLINGS = ("mean", "cls", "max")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks values that would otherwise fail deep inside JAX or silently train nothing."""
    check_against_schema(config, default_config(), "bert_jax/finetuning/config.py")
    train = config.train
    _require(train.global_batch_size > 0 and train.eval_batch_size > 0,
             "config.train.global_batch_size and eval_batch_size must be positive.")
    _require(train.num_train_epochs > 0, f"config.train.num_train_epochs must be > 0, got {train.num_train_epochs}.")
    _require(train.learning_rate > 0, f"config.train.learning_rate must be > 0, got {train.learning_rate}.")
    _require(0 <= train.warmup_proportion < 1,
             f"config.train.warmup_proportion must be in [0, 1), got {train.warmup_proportion}.")
    _require(train.num_seeds >= 1, f"config.train.num_seeds must be >= 1, got {train.num_seeds}.")
    _require(train.evals_per_epoch >= 1, f"config.train.evals_per_epoch must be >= 1, got {train.evals_per_epoch}.")
    _require(config.data.max_seq_length >= 8, f"config.data.max_seq_length={config.data.max_seq_length} is too short.")
    _require(0 < config.data.doc_stride, f"config.data.doc_stride must be > 0, got {config.data.doc_stride}.")
    _require(config.qa.max_answer_length > 0 and config.qa.n_best_size > 0,
             "config.qa.max_answer_length and n_best_size must be > 0.")
    _require(train.max_consecutive_nonfinite_steps >= 0,
             f"config.train.max_consecutive_nonfinite_steps must be >= 0, got {train.max_consecutive_nonfinite_steps}.")
    _require(config.checkpoint.every_steps >= 0 and config.checkpoint.max_to_keep >= 1,
             "config.checkpoint.every_steps must be >= 0 and config.checkpoint.max_to_keep >= 1.")
    _require(config.data.tag_scheme in TAG_SCHEMES,
             f"config.data.tag_scheme={config.data.tag_scheme!r} is not one of {TAG_SCHEMES}.")
    _require(config.data.file_format in FILE_FORMATS,
             f"config.data.file_format={config.data.file_format!r} is not one of {FILE_FORMATS}.")
    sentence = config.sentence
    _require(sentence.loss in SENTENCE_LOSSES, f"config.sentence.loss={sentence.loss!r} is not one of {SENTENCE_LOSSES}.")
    _require(sentence.pooling in SENTENCE_POOLINGS,
             f"config.sentence.pooling={sentence.pooling!r} is not one of {SENTENCE_POOLINGS}.")
    _require(sentence.scale > 0, f"config.sentence.scale must be > 0, got {sentence.scale}.")
    chunks = sentence.gradient_cache_chunks
    _require(chunks >= 0 and (chunks <= 1 or train.global_batch_size % chunks == 0),
             f"config.sentence.gradient_cache_chunks={chunks} must be 0 (off) or divide config.train.global_batch_size "
             f"({train.global_batch_size}).")
    if config.task == "sentence_embedding":
        _require(bool(config.data.text_pair_column), "the sentence_embedding task reads pairs: set "
                 "config.data.text_pair_column (the positive, or the second sentence).")
        _require(not config.data.negative_column or sentence.loss == "multiple_negatives_ranking",
                 "config.data.negative_column (hard negatives) is for config.sentence.loss="
                 "'multiple_negatives_ranking'.")
    return config
