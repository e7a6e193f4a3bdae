"""The one config schema of bert_jax, its documented defaults, and its validation.

Every config file under `configs/` starts from `default_config()` and changes what its recipe needs, so
each field is documented exactly once, here. `validate()` is the single place that turns bad values into
messages a person can act on; entrypoints call it before anything is built.
"""

from __future__ import annotations

import difflib

import ml_collections

from bert_jax import encoder_flags
from bert_jax.errors import InputError
from bert_jax.errors import require as _require
from bert_jax.recipes import (  # noqa: F401 (released names)
    albert_recipe,
    electra_recipe,
    modernbert_recipe,
    roberta_recipe,
    spanbert_recipe,
)


def default_config() -> ml_collections.ConfigDict:
    """Returns the full config tree with BERT-base-like defaults; recipes override parts of it."""
    config = ml_collections.ConfigDict()

    # Encoder hyper-parameters, named as in the BERT paper and HF's BertConfig.
    config.model = ml_collections.ConfigDict()
    config.model.vocab_size = 30522  # rows of the word-embedding table (>= the tokenizer's vocabulary)
    config.model.hidden_size = 768
    config.model.num_hidden_layers = 12
    config.model.num_attention_heads = 12
    config.model.intermediate_size = 3072  # width of the GELU feed-forward layer
    config.model.hidden_act = "gelu"  # exact (erf) GELU as in BERT; 'gelu_tanh' for the approximation
    config.model.max_position_embeddings = 512
    config.model.type_vocab_size = 2  # segment (token type) ids: 0 for sentence A, 1 for sentence B
    config.model.hidden_dropout_prob = 0.1
    config.model.attention_probs_dropout_prob = 0.1
    config.model.initializer_range = 0.02  # stddev of the truncated-normal weight initialiser
    config.model.layer_norm_eps = 1e-12
    config.model.dtype = "float32"  # compute dtype ('float32' | 'bfloat16'); parameters stay float32
    # ALBERT: factorized embeddings of width `embedding_size` projected to `hidden_size` (0: no
    # factorization, embeddings are `hidden_size` wide as in BERT), and cross-layer parameter sharing:
    # the layers are split into `num_hidden_groups` groups that each share one set of weights
    # (0: no sharing, every layer has its own weights as in BERT; 1: ALBERT's all-shared default).
    config.model.embedding_size = 0
    config.model.num_hidden_groups = 0
    # Speed and memory switches; none changes the loss (tests/test_perf_flags.py) or the checkpoint layout.
    # Attention kernel: 'xla' (einsum + softmax, any device, with attention dropout), 'dot_product'
    # (`jax.nn.dot_product_attention`, XLA's fused attention), 'cudnn' (its cuDNN flash attention, NVIDIA
    # GPUs only), 'splash' (Pallas splash attention, TPUs only: block-sparse, it skips the blocks that packing
    # and local windows hide; max_seq_length a multiple of 128, no ALiBi). The fused kernels have no attention
    # dropout: they need attention_probs_dropout_prob = 0.
    config.model.attention_impl = "xla"
    # The MLM output matmul runs against the word embeddings zero-padded to a multiple of this many rows
    # (0 or 1: unpadded); padded logits are dropped before the loss. 128 keeps matmul tiles aligned.
    config.model.vocab_pad_multiple = 128
    # True: unshared layers run in one `jax.lax.scan` over their weights stacked inside the step (compile
    # time independent of depth); False: a Python loop, one copy of the layer per depth in the program.
    config.model.scan_layers = False
    # Rematerialisation of each layer's activations in the backward pass: 'none' (keep all: fastest
    # when memory allows), 'full' (recompute the whole layer), 'dots_saveable' (keep matmul outputs),
    # 'dots_with_no_batch_dims_saveable' (keep only the weight matmuls' outputs).
    config.model.remat_policy = "none"
    # True (google-research/bert): the MLM head runs on the max_predictions_per_seq masked positions only;
    # False: on every position, as HF's BertForPreTraining does (for measuring what the gather saves).
    config.model.gather_masked_positions = True
    # Operands of the dense layers' and the MLM head's matmuls: 'float32', or 'bfloat16' (rounded to bf16,
    # products summed in float32, results float32, in the backward pass too; parameters, norms, softmax and
    # losses stay as `dtype` says), or 'auto': bfloat16 where the hardware multiplies bf16 natively (GPUs,
    # TPUs, CPUs with AVX512-BF16/AMX-BF16, detected from /proc/cpuinfo), else float32. Not exact: the loss
    # moved by at most 2.2e-5 relative in the measured runs (benchmarks/README.md; tests/test_cpu_speed.py
    # allows 2e-2); a speed switch for float32 runs on CPU.
    config.model.matmul_dtype = "float32"
    # True: query, key and value come from one matmul against their three kernels concatenated inside the
    # step (one [hidden, 3 x hidden] product instead of three); the parameters stay query/key/value.
    config.model.fused_qkv = False
    # SpanBERT's span-boundary objective (objective 'mlm_sbo'): the head predicts the k-th token of a masked
    # span from the encoder outputs just outside the span and a learned embedding of k, for
    # k < sbo_max_span_positions (the table's rows; SpanBERT's max_pair_targets 15). Tokens further into a
    # longer span are left to the MLM head, as SpanBERT truncates them. The embeddings are
    # sbo_position_embedding_size wide (SpanBERT's 200).
    config.model.sbo_max_span_positions = 15
    config.model.sbo_position_embedding_size = 200
    # XLM (Lample & Conneau 2019): a table of `num_languages` language embeddings added to the word, position
    # and segment embeddings, fed per token by translation-pair batches (`language_ids`). 0: no table, as in
    # BERT (the parameter tree and exports are BERT's). Fine-tuning and prediction feed language 0.
    config.model.num_languages = 0
    # The block's architecture (bert_jax/encoder_flags.py). The defaults are BERT's 2018 block, unchanged;
    # ModernBERT, NeoBERT and MosaicBERT are settings of these (configs/modernbert_base.py, neobert.py,
    # mosaicbert_base.py). 'post': norm after each residual add (BERT); 'pre': norm before each sub-layer, the
    # residual stream left unnormalised (ModernBERT, NeoBERT).
    config.model.norm_placement = "post"
    config.model.norm_kind = "layernorm"  # 'layernorm' | 'rmsnorm' (scale only, no mean; NeoBERT)
    config.model.final_norm = False  # a norm after the last layer; pre-norm stacks need it (ModernBERT, NeoBERT)
    # The norm after the embedding sum (BERT, ModernBERT). With pre-norm it is also layer 0's attention norm,
    # so layer 0 has none of its own (ModernBERT); False: no embedding norm (NeoBERT).
    config.model.embedding_norm = True
    # 'gelu': BERT's feed-forward layer, dense -> hidden_act -> dense. 'geglu' | 'swiglu': gated (Shazeer
    # 2020): act(x W_a) * (x W_g) -> dense, with act = hidden_act (GeGLU; ModernBERT, MosaicBERT) or SiLU
    # (SwiGLU; NeoBERT); W_a and W_g are one intermediate_size-wide half each of the `intermediate` kernel.
    config.model.ffn_activation = "gelu"
    # 'learned': a table of max_position_embeddings positions added to the embeddings (BERT); 'rotary':
    # RoPE on queries and keys in every layer (Su et al. 2021; ModernBERT, NeoBERT); 'alibi': a per-head
    # linear distance penalty on the attention scores, -m_h |i - j| (Press et al. 2022; MosaicBERT).
    config.model.position_encoding = "learned"
    config.model.rope_theta = 10000.0  # RoPE base of the global-attention layers (ModernBERT: 160000)
    config.model.local_rope_theta = 0.0  # RoPE base of the local-window layers; 0 = rope_theta (ModernBERT: 10000)
    # False: no bias in any dense layer or norm (ModernBERT); the MLM head's vocabulary bias is always kept.
    config.model.use_bias = True
    # Local attention (ModernBERT): with a window w > 0, layer i attends to the whole row only when
    # i % global_attention_every_n_layers == 0, and the other layers to the keys within w // 2 tokens of
    # the query (ModernBERT: w 128, every 3rd layer global). 0: every layer global (BERT).
    config.model.local_attention_window = 0
    config.model.global_attention_every_n_layers = 1
    # True: the MLM head's output matrix is the word-embedding table (BERT, ModernBERT); False: its own.
    config.model.tie_word_embeddings = True

    # Pretraining objective: 'mlm_nsp' (BERT: masked LM + next-sentence prediction), 'mlm_sop' (ALBERT:
    # masked LM + sentence-order prediction), 'mlm' (RoBERTa: masked LM only, no pair head or pooler),
    # 'mlm_sbo' (SpanBERT: masked LM + the span-boundary objective, single segments, no pair head or pooler;
    # its loss is the sum of the two means; SBO works with any masking.kind, SpanBERT's is 'span'),
    # 'electra' (ELECTRA: a small MLM generator fills the masked positions with its samples and the
    # encoder of `config.model`, the discriminator, tells replaced from original tokens; see config.electra).
    config.objective = "mlm_nsp"

    # ELECTRA (Clark et al. 2020), used when config.objective == 'electra'. The generator is a BERT encoder
    # with an MLM head that shares the discriminator's embedding tables (word, position, segment and their
    # LayerNorm, as google-research/electra does); it is hidden_size * generator_hidden_fraction wide with
    # 4x that as intermediate size and one attention head per 64 dimensions, and
    # num_hidden_layers * generator_layers_fraction deep (google-research/electra's get_generator_config).
    config.electra = ml_collections.ConfigDict()
    config.electra.generator_hidden_fraction = 0.25  # google-research/electra's default (paper: small 1/4, base 1/3)
    config.electra.generator_layers_fraction = 1.0
    config.electra.rtd_weight = 50.0  # lambda in loss = generator MLM loss + lambda * replaced-token-detection loss
    config.electra.temperature = 1.0  # the generator's logits are divided by this before sampling

    # Knowledge distillation (`python -m bert_jax.distill`): config.model is the student, trained on this
    # pipeline's masked batches (objective 'mlm') from a frozen teacher that runs, without gradients, in the
    # same jitted step. `teacher_checkpoint`: a pretraining workdir, a params export or a transformers
    # directory; it is copied into <workdir>/teacher once, and its tokenizer is the run's.
    # 'distilbert' (Sanh et al. 2019): the student is the teacher with half its layers, no segment table and
    # no pooler, initialised from teacher layers 0, 2, 4, ...; its speed switches and dropout stay
    # config.model's. loss = soft_target_weight * T^2 * KL(teacher || student at temperature T) at the
    # masked positions + mlm_weight * the student's MLM loss + cosine_weight * mean(1 - cos) between the
    # last hidden states of the real tokens. The KL is the soft-target cross-entropy minus the teacher's
    # entropy, a constant: the same gradients, and 0 when the student matches.
    # 'tinybert' (Jiao et al. 2020): a narrower student of config.model's shape (vocabulary, positions and
    # segments from the teacher) with one learned map `fit_dense` into the teacher's width. For the first
    # `intermediate_fraction` of the steps the loss is embedding_weight * MSE(embedding outputs) +
    # hidden_weight * sum of MSE(hidden states) + attention_weight * sum of MSE(attention scores) between
    # student layer m and teacher layer m * N / M; then the prediction layer: soft_target_weight * T^2 * KL.
    config.teacher_checkpoint = ""
    config.distill = ml_collections.ConfigDict()
    config.distill.recipe = ""  # '' (no teacher), 'distilbert' or 'tinybert'
    config.distill.temperature = 2.0
    config.distill.soft_target_weight = 5.0
    config.distill.mlm_weight = 2.0
    config.distill.cosine_weight = 1.0
    config.distill.embedding_weight = 1.0
    config.distill.hidden_weight = 1.0
    config.distill.attention_weight = 1.0
    config.distill.intermediate_fraction = 0.5
    config.distill.teacher_dtype = "float32"  # 'bfloat16': the teacher's weights and forward in bf16
    config.distill.init_from_teacher = True  # 'distilbert': start from every other teacher layer (False: random)
    # Filled from the teacher when the run starts, never by hand: its encoder config and objective.
    config.distill.teacher_model = ml_collections.ConfigDict(config.model.to_dict())
    config.distill.teacher_objective = ""

    # Masked-LM masking, done on the device inside the jitted step.
    config.masking = ml_collections.ConfigDict()
    config.masking.mask_rate = 0.15  # fraction of maskable tokens selected for prediction
    config.masking.mask_token_fraction = 0.8  # of the selected: replaced by [MASK]
    config.masking.random_token_fraction = 0.1  # of the selected: replaced by a random token
    config.masking.max_predictions_per_seq = 20  # cap on selected positions per sequence
    # 'token' (BERT), 'whole_word' (all pieces of a word together), 'ngram' (ALBERT: spans of 1..max_ngram
    # words, P(n) proportional to 1/n), 'span' (SpanBERT: span lengths in words ~ Geometric(span_p),
    # clipped at max_span_length). Word starts come from SentencePiece's word-boundary marker.
    config.masking.kind = "token"
    config.masking.max_ngram = 3
    config.masking.span_p = 0.2
    config.masking.max_span_length = 10
    # True (RoBERTa): new masks from (seed, step) every time an example is seen. False (BERT's
    # precomputed data): the example and its mask depend only on the example and on
    # (epoch mod dupe_factor), so each example has `dupe_factor` distinct masks over the run.
    config.masking.dynamic = True
    config.masking.dupe_factor = 10

    # Input pipeline.
    config.data = ml_collections.ConfigDict()
    # Text files (a file, a directory or a glob; one sentence per line, documents separated by blank
    # lines), or 'tfds:NAME[:SPLIT]' for a TFDS text corpus prepared in array_record format (e.g.
    # 'tfds:wikipedia/20230601.en'). Empty: the embedded default corpus of the stdlib's docstrings.
    config.data.corpus = ""
    # Held-out text in the same format; empty: hold out `eval_fraction` of the corpus's documents.
    config.data.eval_corpus = ""
    # Multilingual corpora (M-BERT, XLM-R): entries of `corpus` (and `eval_corpus`) tagged with a language code,
    # 'en:/d/en.txt,ru:/d/ru/,ja:tfds:NAME', or with `language_folders` one folder whose every subfolder is a
    # language named by the folder (en/, ru/, pt_BR/). Each language is held out and tokenized on its own
    # (eval_fraction of each, or its part of eval_corpus); training samples language i with probability
    # q_i proportional to p_i^language_alpha (p_i: its share of the training instances; 0.7 is M-BERT's
    # smoothing, XLM-R used 0.3; 1 is in proportion, 0 uniform), and a tokenizer trained here learns from a
    # sample of the text resampled with tokenizer_alpha (XLM's 0.3-0.5), so low-resource languages get pieces
    # of their own. The held-out set
    # then holds eval_num_examples instances of each language, reported as mlm_accuracy/<language> too.
    config.data.language_folders = False
    config.data.language_alpha = 0.7
    config.data.tokenizer_alpha = 0.3
    # Filled when a multilingual run (or one mixing TLM with MLM) starts, never by hand: its languages in id
    # order (sorted), so resumed runs and `bert_jax.evaluate` give every example the same language id.
    # Empty: one language, or TLM only (whose ids index the parallel corpus's sorted languages).
    config.data.languages = ()
    config.data.eval_fraction = 0.05
    config.data.eval_num_examples = 256  # size of the fixed evaluation set (instances)
    config.data.eval_seed = 12345  # fixes the evaluation instances and their masks, run after run
    config.data.max_seq_length = 128
    # 'sentence_pairs' ([CLS] A [SEP] B [SEP], for NSP/SOP) or 'full_sentences' (RoBERTa: contiguous
    # sentences packed up to max_seq_length across documents, a [SEP] at each document boundary), or
    # 'translation_pairs' (XLM's translation LM: [CLS] source [SEP] target [SEP] from `parallel_corpus`,
    # with objective 'mlm'; see data/translation_pairs.py).
    config.data.instance_format = "sentence_pairs"
    # Parallel text for 'translation_pairs': comma-separated 'SRC-TGT:PREFIX' entries, each naming the files
    # PREFIX.SRC and PREFIX.TGT (XLM's naming: 'en-fr:/data/para/train.en-fr' reads train.en-fr.en and
    # train.en-fr.fr), one sentence per line, aligned by line. `eval_fraction` of the pairs are held out.
    config.data.parallel_corpus = ""
    # XLM trains MLM and TLM together: with 'translation_pairs' and a language-tagged monolingual `corpus`
    # (or `language_folders`), tlm_ratio of the training rows are translation pairs and the rest monolingual
    # MLM rows (RoBERTa-style full rows of each language's text, sampled by language_alpha), one shuffled
    # stream; the run's languages are the union of both corpora's. 1.0 or an empty `corpus`: TLM only.
    # The held-out set adds the pairs to each language's monolingual text, reported as mlm_accuracy/tlm.
    config.data.tlm_ratio = 0.5
    config.data.short_seq_prob = 0.1  # as in google-research/bert: sometimes build shorter instances
    # SentencePiece model to use; empty: train one on the corpus and cache it in the workdir.
    config.data.tokenizer_model = ""
    config.data.tokenizer_vocab_size = 30522  # vocabulary of the SentencePiece model trained here
    config.data.num_workers = 0  # Grain worker processes (0: build batches in the main process)
    # Tokenization of text corpora: worker processes (0: os.cpu_count()) and documents per array_record shard.
    config.data.preprocess_workers = 0
    config.data.docs_per_shard = 50_000
    # Sequence packing (MLPerf BERT): several sentence-pair instances share one row of max_seq_length,
    # each with its own positions from 0, attending only to itself, with one [CLS] and pair label each.
    # Removes the padding of short instances; needs instance_format 'sentence_pairs'.
    config.data.pack_sequences = False
    config.data.max_instances_per_pack = 3

    # Optimisation.
    config.train = ml_collections.ConfigDict()
    config.train.global_batch_size = 256
    config.train.num_train_steps = 1_000_000
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 10_000
    config.train.weight_decay = 0.01  # decoupled decay; LayerNorm scales and biases excluded
    # 'adamw' (BERT); 'lamb' (ALBERT: per-tensor trust ratio, LayerNorm and biases excluded from it);
    # 'stable_adamw' (ModernBERT: AdamW with per-tensor update clipping). All use the adam_* fields.
    config.train.optimizer = "adamw"
    config.train.adam_b1 = 0.9
    config.train.adam_b2 = 0.999
    config.train.adam_eps = 1e-6
    config.train.max_grad_norm = 1.0  # global-norm clipping, before any optimizer
    # 'linear': warmup, then linear decay over the rest of the run. 'wsd' (warmup-stable-decay): warmup,
    # constant, then a decay of `decay_steps` steps shaped 'linear' | '1-sqrt' (ModernBERT) | 'cosine',
    # starting at `decay_start_step` (-1: the last decay_steps of the run). To decay from a stable-phase
    # checkpoint of step S, resume it with decay_start_step=S and num_train_steps=S+decay_steps.
    config.train.schedule = "linear"
    config.train.decay_steps = 0
    config.train.decay_shape = "linear"
    config.train.decay_start_step = -1
    config.train.min_learning_rate_ratio = 0.0  # where either decay ends, as a fraction of learning_rate
    config.train.seed = 0
    config.train.log_every_steps = 100
    config.train.eval_every_steps = 10_000
    config.train.eval_batch_size = 64
    # A params-only export (`bert_jax.export --format=params` or `bert_jax.import_hf`) to start from
    # instead of random weights (continued pretraining). Its model config, objective and tokenizer are
    # used; only a run with no checkpoint of its own starts from it.
    config.train.init_checkpoint = ""
    # A step whose loss or gradient is NaN/inf applies no update (it is counted as `skipped_steps` in
    # the metrics). After this many such steps in a row the run restores the newest checkpoint from
    # before them and goes on with the next batch, so the offending batches are not replayed
    # (0: only skip, never restore).
    config.train.max_consecutive_nonfinite_steps = 5
    # Test hook, not for real runs: the steps (as numbered in the log, 1 = the first update) whose loss
    # is made NaN inside the train step, to exercise the guard above. Empty: the step has no such code.
    config.train.debug_poison_steps = ()
    # Donate the train state's buffers to the step, so XLA updates parameters and optimizer state in
    # place instead of holding two copies (False only to measure what donation saves).
    config.train.donate_state = True
    # The PRNG of dropout only: 'threefry' (JAX's default), or 'rbg' / 'unsafe_rbg' (XLA's RngBitGenerator:
    # cheaper bits; 'unsafe_rbg' also splits keys cheaply). The dropout key stays a function of (seed, step),
    # so a resumed run repeats its dropout; masks and the data stream always use threefry. With rbg the
    # dropout masks may differ between device counts (threefry's are the same on 1 or 8 devices).
    config.train.dropout_prng = "threefry"
    # Re-running in a workdir resumes its newest checkpoint only if the config, tokenizer and corpus
    # still match what it was written with (pretraining/resume_check.py). True: accept changed data or
    # training stream (corpus files, batch size, sequence length, masking, packing, seed, eval set), with
    # a warning listing them; the data iterator restarts where the old stream had got to. A different
    # tokenizer or model is always refused: the embeddings would index other pieces, the weights not fit.
    config.train.allow_changed_data = False

    # Orbax checkpointing in <workdir>/checkpoints.
    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 10_000
    config.checkpoint.max_to_keep = 3
    config.checkpoint.async_save = True

    # Device mesh: 'data' x 'fsdp' devices. The batch is split over both axes; parameters and optimizer
    # state are split over 'fsdp' (ZeRO-3 style: each device holds 1/fsdp of them and all-gathers a layer's
    # weights when it needs them) and replicated over 'data'. data -1: all devices not used by fsdp.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1
    return config


def from_stored(stored: dict) -> ml_collections.ConfigDict:
    """A config saved with a checkpoint or export, on top of today's defaults.

    Fields added since the checkpoint was written take their default values (which reproduce the old
    behaviour), so older runs stay loadable.
    """
    config = default_config()

    def merge(target, values):
        for key, value in values.items():
            if isinstance(value, dict) and key in target and isinstance(target[key], ml_collections.ConfigDict):
                merge(target[key], value)
            else:
                target[key] = value

    merge(config, stored)
    return config


_OBJECTIVES = ("mlm_nsp", "mlm_sop", "mlm", "mlm_sbo", "electra")
SINGLE_SEGMENT_OBJECTIVES = ("mlm", "mlm_sbo", "electra")  # instances without a sentence pair: one segment, no pair head
_MASKING_KINDS = ("token", "whole_word", "ngram", "span")
_INSTANCE_FORMATS = ("sentence_pairs", "full_sentences", "translation_pairs")
_ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
_DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLS = ("xla", "dot_product", "cudnn", "splash")
MATMUL_DTYPES = ("float32", "bfloat16", "auto")
DROPOUT_PRNGS = ("threefry", "rbg", "unsafe_rbg")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")


def parallel_corpus_entries(spec: str) -> list[tuple[str, str, str]]:
    """`config.data.parallel_corpus` as (source language, target language, file prefix) entries."""
    entries = []
    for part in (p.strip() for p in spec.split(",")):
        pair, _, prefix = part.partition(":")
        languages = pair.split("-")
        _require(bool(part) and bool(prefix) and len(languages) == 2 and all(
            language.isascii() and language.isalnum() for language in languages) and languages[0] != languages[1],
                 f"config.data.parallel_corpus entry {part!r} is not 'SRC-TGT:PREFIX' with two different language "
                 "codes (letters and digits) and a file prefix, e.g. 'en-fr:/data/para/train.en-fr' for "
                 "train.en-fr.en and train.en-fr.fr.")
        _require(not any((src, tgt) == (languages[0], languages[1]) for src, tgt, _ in entries),
                 f"config.data.parallel_corpus names {pair!r} twice; give each language pair once (put its "
                 "lines into one pair of files).")
        entries.append((languages[0], languages[1], prefix))
    return entries


TLM_GROUP = "tlm"  # the held-out translation pairs' name among the per-language eval figures of a mixed run


def mixes_monolingual(config_data) -> bool:
    """Whether a 'translation_pairs' run also trains MLM on the monolingual `corpus` (tlm_ratio below 1)."""
    return (config_data.instance_format == "translation_pairs" and bool(config_data.corpus.strip())
            and config_data.tlm_ratio < 1.0)


def monolingual_languages(config_data) -> dict[str, str]:
    """{language: its corpus spec} of a mixed run's monolingual corpus, which has to be language-tagged."""
    from bert_jax.data import languages  # here: languages.py imports this module

    by_language = languages.parse(config_data.corpus, language_folders=config_data.language_folders)
    _require(by_language is not None, f"config.data.corpus={config_data.corpus!r} has no language tags, but mixed "
             "with translation pairs (config.data.tlm_ratio < 1) its rows need a language id; tag it, e.g. "
             "'en:/data/en.txt,fr:/data/fr/', or set config.data.tlm_ratio=1.0 for TLM only.")
    return by_language


def run_languages(config_data) -> list[str]:
    """The languages of a run (`config.data`), sorted: a token's language id is its language's index here.
    A translation-pair run's are its parallel corpus's, with those of a mixed-in monolingual corpus."""
    if config_data.instance_format != "translation_pairs":
        return []
    languages = {language for src, tgt, _ in parallel_corpus_entries(config_data.parallel_corpus)
                 for language in (src, tgt)}
    if mixes_monolingual(config_data):
        languages |= set(monolingual_languages(config_data))
    by_case = {}
    for language in sorted(languages):
        _require(language.lower() not in by_case, f"{by_case.get(language.lower())!r} and {language!r} name one "
                 "language in two spellings across config.data.corpus and config.data.parallel_corpus; write it the "
                 "same way in both, or it would get two language ids.")
        by_case[language.lower()] = language
    return sorted(languages)


def eval_groups(config_data) -> tuple[str, ...]:
    """The names of the held-out set's per-language MLM sums, in id order: the recorded languages, then
    `TLM_GROUP` for the translation pairs of a mixed run."""
    return tuple(config_data.languages) + ((TLM_GROUP,) if mixes_monolingual(config_data) else ())


def validate_translation_pairs(config: ml_collections.ConfigDict) -> None:
    """XLM's translation LM: the parallel corpus and the model and objective it needs."""
    d, m = config.data, config.model
    _require(bool(d.parallel_corpus), "config.data.instance_format='translation_pairs' reads parallel text: set "
             "config.data.parallel_corpus='SRC-TGT:PREFIX' (e.g. 'en-fr:/data/para/train.en-fr').")
    _require(config.objective == "mlm", f"translation pairs train the masked LM alone (XLM's TLM), so they need "
             f"config.objective='mlm', got {config.objective!r}.")
    _require(not d.pack_sequences, "translation pairs are one pair per row; turn config.data.pack_sequences off.")
    _require(m.type_vocab_size >= 2, "translation pairs give the target side segment id 1, so they need "
             f"config.model.type_vocab_size >= 2, got {m.type_vocab_size}.")
    _require(0.0 < d.tlm_ratio <= 1.0, f"config.data.tlm_ratio is the share of training rows that are translation "
             f"pairs and must be in (0, 1] (1: TLM only; for MLM only use another instance_format), got {d.tlm_ratio}.")
    languages = run_languages(d)
    where = ("config.data.parallel_corpus and config.data.corpus have" if mixes_monolingual(d)
             else "config.data.parallel_corpus has")
    _require(m.num_languages >= len(languages),
             f"{where} {len(languages)} languages {languages}, but config.model.num_languages "
             f"is {m.num_languages}; set config.model.num_languages={len(languages)} (one embedding per language).")
    _require(TLM_GROUP not in languages or not mixes_monolingual(d), f"language {TLM_GROUP!r} would share its "
             "held-out figure's name with the translation pairs' (mlm_accuracy/tlm); rename it in the corpus.")
    _require(not d.eval_corpus or mixes_monolingual(d), "translation pairs hold out config.data.eval_fraction of the "
             "parallel lines; leave config.data.eval_corpus empty.")
    _require(d.eval_fraction > 0, "translation pairs hold out config.data.eval_fraction of the parallel lines for "
             "evaluation; set it above 0 (e.g. 0.05).")


def config_keys(config: ml_collections.ConfigDict, prefix: str = "config") -> list[str]:
    """Every leaf of `config` as a dotted path ('config.train.learning_rate', ...)."""
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(config_keys(value, f"{prefix}.{key}"))
        else:
            keys.append(f"{prefix}.{key}")
    return keys


def unknown_key_message(path: str, schema: ml_collections.ConfigDict, schema_file: str, *,
                        flag_prefix: str = "", what: str = "is not a config field") -> str:
    """'config.x.y is not a config field; did you mean ...?' with the closest known keys.

    `flag_prefix` ('--') writes the key and the suggestions as command-line flags.
    """
    keys = config_keys(schema)
    leaves = {}
    for key in keys:
        leaves.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    close = [key for leaf in difflib.get_close_matches(path.rsplit(".", 1)[-1], list(leaves), n=3, cutoff=0.7)
             for key in leaves[leaf]]
    close = close or difflib.get_close_matches(path, keys, n=3, cutoff=0.85)  # a misspelt group name
    hint = (f"did you mean {' or '.join(flag_prefix + key for key in close)}?" if close
            else f"remove it (the fields are documented in {schema_file}).")
    return f"{flag_prefix}{path} {what}; {hint}"


def _type_ok(value, expected: type) -> bool:
    if isinstance(value, bool) != (expected is bool):
        return False
    if expected is float:
        return isinstance(value, (int, float))  # an int where a float is expected is fine
    if expected in (tuple, list):
        return isinstance(value, (tuple, list))
    return isinstance(value, expected)


def check_against_schema(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, schema_file: str,
                         prefix: str = "config", root: ml_collections.ConfigDict | None = None) -> None:
    """Raises InputError for a key `schema` does not have or a value of another type than its field's.

    `schema` is the default config (its placeholders give the type of fields that default to None).
    """
    for key, value in config.items():
        path = f"{prefix}.{key}"
        if key not in schema:
            raise InputError(unknown_key_message(path, root or schema, schema_file))
        default = schema[key]
        if isinstance(default, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise InputError(f"{path} must be a group of fields (a ConfigDict), got {value!r}; set its "
                                 f"fields one by one, e.g. {path}.{next(iter(default.keys()), 'x')}=...")
            check_against_schema(value, default, schema_file, path, root or schema)
            continue
        expected = schema.get_type(key)
        if value is None and default is None:
            continue  # a placeholder left unset
        if not _type_ok(value, expected):
            raise InputError(f"{path}={value!r} is of type {type(value).__name__}, but the field takes "
                             f"{expected.__name__} values (default {default!r}); give a value of type "
                             f"{expected.__name__}.")


def check_matmul_dtype(matmul_dtype: str) -> None:
    _require(matmul_dtype in MATMUL_DTYPES,
             f"config.model.matmul_dtype={matmul_dtype!r} is not one of {MATMUL_DTYPES}.")


def check_attention_switches(attention_impl: str, attention_probs_dropout_prob: float, dtype: str) -> None:
    """The attention kernel against the settings it cannot run with; `validate` and the model's own
    BertConfig (which fine-tuning and exports build from stored configs) both ask here."""
    _require(attention_impl in ATTENTION_IMPLS,
             f"config.model.attention_impl={attention_impl!r} is not one of {ATTENTION_IMPLS}.")
    _require(attention_impl == "xla" or attention_probs_dropout_prob == 0.0,
             f"config.model.attention_impl={attention_impl!r} has no attention dropout, but "
             f"config.model.attention_probs_dropout_prob is {attention_probs_dropout_prob}; set it to 0.0 "
             "(as MosaicBERT and ModernBERT do) or use attention_impl='xla'.")
    _require(attention_impl != "cudnn" or dtype == "bfloat16",
             "config.model.attention_impl='cudnn' runs in 16-bit only, but config.model.dtype is "
             f"{dtype!r}; set config.model.dtype='bfloat16' or use attention_impl='dot_product'.")


def check_remat_policy(remat_policy: str) -> None:
    _require(remat_policy in REMAT_POLICIES,
             f"config.model.remat_policy={remat_policy!r} is not one of {REMAT_POLICIES}.")


def electra_generator_size(hidden_size: int, num_hidden_layers: int, electra) -> dict[str, int]:
    """The generator's hidden_size, num_hidden_layers, intermediate_size and num_attention_heads for a
    discriminator of `hidden_size` x `num_hidden_layers` (google-research/electra's get_generator_config)."""
    hidden = int(round(hidden_size * electra.generator_hidden_fraction))
    return {"hidden_size": hidden, "num_hidden_layers": int(round(num_hidden_layers * electra.generator_layers_fraction)),
            "intermediate_size": 4 * hidden, "num_attention_heads": max(1, hidden // 64)}


def validate_electra(config: ml_collections.ConfigDict) -> None:
    """The ELECTRA fields, and the data settings the objective cannot run with."""
    e = config.electra
    _require(0.0 < e.generator_hidden_fraction <= 1.0 and 0.0 < e.generator_layers_fraction <= 1.0,
             "config.electra.generator_hidden_fraction and generator_layers_fraction must be in (0, 1], got "
             f"{e.generator_hidden_fraction} and {e.generator_layers_fraction} (the paper finds generators 1/4 "
             "to 1/2 of the discriminator's width best).")
    size = electra_generator_size(config.model.hidden_size, config.model.num_hidden_layers, e)
    _require(size["hidden_size"] >= 1 and size["num_hidden_layers"] >= 1
             and size["hidden_size"] % size["num_attention_heads"] == 0,
             f"config.electra.generator_hidden_fraction={e.generator_hidden_fraction} and generator_layers_fraction="
             f"{e.generator_layers_fraction} give a generator of {size}, whose hidden size is not divisible by its "
             "head count (one head per 64 dimensions) or that has no layer; choose fractions that give a width "
             "below 64 or a multiple of 64, and at least one layer.")
    head_width = size["hidden_size"] // size["num_attention_heads"]
    _require(config.model.position_encoding != "rotary" or head_width % 2 == 0,
             f"config.electra.generator_hidden_fraction={e.generator_hidden_fraction} gives a generator whose heads "
             f"are {head_width} wide, but config.model.position_encoding='rotary' rotates pairs of dimensions; "
             "choose a fraction that gives an even head width (e.g. 0.25 of a multiple of 8).")
    _require(e.rtd_weight >= 0, f"config.electra.rtd_weight must be non-negative, got {e.rtd_weight}.")
    _require(e.temperature > 0, f"config.electra.temperature must be positive, got {e.temperature}.")
    _require(not config.data.pack_sequences,
             "config.objective='electra' trains on single segments, but config.data.pack_sequences packs "
             "sentence pairs; turn pack_sequences off (use instance_format='full_sentences' for full rows).")


DISTILL_RECIPES = ("distilbert", "tinybert")


def validate_distill(config: ml_collections.ConfigDict) -> None:
    """The distillation fields, and (once `distill.teacher_model` is filled) the student against the teacher."""
    k, m, t = config.distill, config.model, config.distill.teacher_model
    _require(k.recipe in DISTILL_RECIPES, f"config.distill.recipe={k.recipe!r} is not one of {DISTILL_RECIPES}; "
             "distillation needs a recipe (configs/distill/*.py set one).")
    _require(config.objective == "mlm", f"distillation trains the student with objective 'mlm' (masked LM, single "
             f"segments), got config.objective={config.objective!r}.")
    _require(not config.data.pack_sequences, "distillation runs on unpacked rows; turn config.data.pack_sequences off.")
    _require(m.num_hidden_groups == 0, "the distillation student needs unshared layers; set "
             "config.model.num_hidden_groups=0.")
    _require(k.temperature > 0, f"config.distill.temperature must be positive, got {k.temperature}.")
    for name in ("soft_target_weight", "mlm_weight", "cosine_weight", "embedding_weight", "hidden_weight",
                 "attention_weight"):
        _require(k[name] >= 0, f"config.distill.{name} must be non-negative, got {k[name]}.")
    _require(0.0 <= k.intermediate_fraction <= 1.0,
             f"config.distill.intermediate_fraction must be in [0, 1], got {k.intermediate_fraction}.")
    _require(k.teacher_dtype in _DTYPES, f"config.distill.teacher_dtype={k.teacher_dtype!r} is not one of {_DTYPES}.")
    if not k.teacher_objective:
        return
    _require(m.vocab_size == t.vocab_size, f"the student's vocabulary ({m.vocab_size}) must be the teacher's "
             f"({t.vocab_size}): the soft targets are distributions over the teacher's pieces.")
    _require(m.num_hidden_layers <= t.num_hidden_layers, f"the student has more layers ({m.num_hidden_layers}) than "
             f"the teacher ({t.num_hidden_layers}); set config.model.num_hidden_layers to at most "
             f"{t.num_hidden_layers} or give a deeper teacher.")
    if k.recipe == "distilbert":
        _require(m.hidden_size == t.hidden_size, f"the DistilBERT recipe compares hidden states by cosine, so the "
                 f"student's hidden_size ({m.hidden_size}) must be the teacher's ({t.hidden_size}); use "
                 "configs/distill/tinybert_4l.py for a narrower student.")
    if k.recipe == "tinybert" and k.attention_weight > 0:
        _require(m.num_attention_heads == t.num_attention_heads,
                 f"TinyBERT's attention loss compares head by head, so the student needs the teacher's "
                 f"{t.num_attention_heads} heads (config.model.num_attention_heads={m.num_attention_heads}), or "
                 "config.distill.attention_weight=0.")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks a config for values that cannot work and raises InputError naming the field and the fix."""
    check_against_schema(config, default_config(), "bert_jax/config.py")
    m = config.model
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings"):
        _require(int(m[name]) > 0, f"config.model.{name} must be a positive integer, got {m[name]}.")
    _require(int(m.type_vocab_size) >= 0 and (m.type_vocab_size > 0 or config.objective in SINGLE_SEGMENT_OBJECTIVES),
             f"config.model.type_vocab_size must be positive (0, no segment table as in DistilBERT, only for the "
             f"single-segment objectives {SINGLE_SEGMENT_OBJECTIVES}), got {m.type_vocab_size}.")
    _require(
        m.hidden_size % m.num_attention_heads == 0,
        f"config.model.hidden_size ({m.hidden_size}) is not divisible by config.model.num_attention_heads "
        f"({m.num_attention_heads}); choose a head count that divides the hidden size.",
    )
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        _require(0.0 <= m[name] < 1.0, f"config.model.{name} must be in [0, 1), got {m[name]}.")
    _require(m.hidden_act in _ACTIVATIONS,
             f"config.model.hidden_act={m.hidden_act!r} is not one of {_ACTIVATIONS}.")
    _require(m.dtype in _DTYPES, f"config.model.dtype={m.dtype!r} is not one of {_DTYPES}.")
    check_matmul_dtype(m.matmul_dtype)
    _require(m.embedding_size >= 0, f"config.model.embedding_size must be 0 (= hidden_size) or positive, "
                                    f"got {m.embedding_size}.")
    _require(m.embedding_size <= m.hidden_size,
             f"config.model.embedding_size ({m.embedding_size}) is larger than config.model.hidden_size "
             f"({m.hidden_size}); ALBERT factorizes embeddings to save parameters, so use an embedding_size "
             "below the hidden size (or 0 for none).")
    _require(m.num_hidden_groups >= 0 and (m.num_hidden_groups == 0
                                           or m.num_hidden_layers % m.num_hidden_groups == 0),
             f"config.model.num_hidden_groups ({m.num_hidden_groups}) must be 0 (no sharing) or divide "
             f"config.model.num_hidden_layers ({m.num_hidden_layers}).")
    _require(config.objective in _OBJECTIVES,
             f"config.objective={config.objective!r} is not one of {_OBJECTIVES}.")
    check_attention_switches(m.attention_impl, m.attention_probs_dropout_prob, m.dtype)
    _require(m.vocab_pad_multiple >= 0,
             f"config.model.vocab_pad_multiple must be 0 (no padding) or positive, got {m.vocab_pad_multiple}.")
    check_remat_policy(m.remat_policy)
    encoder_flags.validate_block(m)
    for name in ("sbo_max_span_positions", "sbo_position_embedding_size"):
        _require(m[name] >= 1, f"config.model.{name} must be at least 1, got {m[name]} (SpanBERT: 15 and 200).")

    mk = config.masking
    _require(mk.kind in _MASKING_KINDS, f"config.masking.kind={mk.kind!r} is not one of {_MASKING_KINDS}.")
    _require(mk.dupe_factor >= 1, f"config.masking.dupe_factor must be at least 1, got {mk.dupe_factor}.")
    _require(mk.max_ngram >= 1, f"config.masking.max_ngram must be at least 1, got {mk.max_ngram}.")
    _require(0.0 < mk.span_p < 1.0, f"config.masking.span_p must be in (0, 1), got {mk.span_p}.")
    _require(mk.max_span_length >= 1, f"config.masking.max_span_length must be at least 1, got {mk.max_span_length}.")
    _require(0.0 < mk.mask_rate < 1.0, f"config.masking.mask_rate must be in (0, 1), got {mk.mask_rate}.")
    _require(
        mk.mask_token_fraction >= 0 and mk.random_token_fraction >= 0
        and mk.mask_token_fraction + mk.random_token_fraction <= 1.0,
        "config.masking.mask_token_fraction + random_token_fraction must be within [0, 1] "
        f"(got {mk.mask_token_fraction} + {mk.random_token_fraction}).",
    )
    _require(mk.max_predictions_per_seq > 0,
             f"config.masking.max_predictions_per_seq must be positive, got {mk.max_predictions_per_seq}.")

    d = config.data
    _require(d.instance_format in _INSTANCE_FORMATS,
             f"config.data.instance_format={d.instance_format!r} is not one of {_INSTANCE_FORMATS}.")
    _require(d.instance_format != "full_sentences" or config.objective in SINGLE_SEGMENT_OBJECTIVES,
             f"config.data.instance_format='full_sentences' packs text without sentence pairs, so it needs "
             f"config.objective='mlm', 'mlm_sbo' or 'electra' (got {config.objective!r}); use 'sentence_pairs' for "
             "NSP/SOP.")
    _require(d.max_seq_length >= 8,
             f"config.data.max_seq_length must be at least 8 tokens, got {d.max_seq_length}.")
    _require(
        d.max_seq_length <= m.max_position_embeddings,
        f"config.data.max_seq_length ({d.max_seq_length}) is larger than "
        f"config.model.max_position_embeddings ({m.max_position_embeddings}); lower the sequence length "
        "or raise the number of position embeddings.",
    )
    _require(mk.max_predictions_per_seq <= d.max_seq_length,
             f"config.masking.max_predictions_per_seq ({mk.max_predictions_per_seq}) exceeds "
             f"config.data.max_seq_length ({d.max_seq_length}).")
    _require(d.preprocess_workers >= 0,
             f"config.data.preprocess_workers must be 0 (all cores) or positive, got {d.preprocess_workers}.")
    _require(d.docs_per_shard > 0, f"config.data.docs_per_shard must be positive, got {d.docs_per_shard}.")
    _require(not d.pack_sequences or d.instance_format == "sentence_pairs",
             "config.data.pack_sequences packs sentence-pair instances, but config.data.instance_format is "
             f"{d.instance_format!r}, whose rows are already full; turn pack_sequences off.")
    # A full packed row has at least [CLS] and two [SEP] that are never masked; masking.py takes round(rate * n).
    full_row_predictions = round((d.max_seq_length - 3) * mk.mask_rate)
    _require(not d.pack_sequences or mk.max_predictions_per_seq >= full_row_predictions,
             f"config.data.pack_sequences fills rows of {d.max_seq_length} tokens, of which mask_rate "
             f"{mk.mask_rate} selects up to {full_row_predictions}, but config.masking.max_predictions_per_seq is "
             f"{mk.max_predictions_per_seq} per row; raise it to {full_row_predictions} (MLPerf uses 76 at 512) so "
             "that packed instances are masked at the same rate as unpacked ones.")
    _require(not d.parallel_corpus or d.instance_format == "translation_pairs",
             f"config.data.parallel_corpus is set, but parallel text is read only with "
             f"config.data.instance_format='translation_pairs' (got {d.instance_format!r}); set that, or leave "
             "parallel_corpus empty.")
    if d.instance_format == "translation_pairs":
        validate_translation_pairs(config)
    # Only translation-pair batches carry language ids: any other run would feed every token language 0.
    _require(m.num_languages >= 0 and (m.num_languages == 0 or (d.instance_format == "translation_pairs"
                                                               and not config.distill.recipe)),
             f"config.model.num_languages={m.num_languages} adds XLM's language embeddings, which only "
             "translation-pair runs (config.data.instance_format='translation_pairs', without distillation) feed "
             f"language ids; with instance_format {d.instance_format!r} every token would be language 0: set "
             "config.model.num_languages=0 (a multilingual corpus needs no language table, as in XLM-R).")
    if config.objective == "electra":
        validate_electra(config)
    if config.distill.recipe or config.teacher_checkpoint:
        validate_distill(config)
    _require(d.max_instances_per_pack >= 1,
             f"config.data.max_instances_per_pack must be at least 1, got {d.max_instances_per_pack}.")
    _require(0.0 <= d.eval_fraction < 1.0, f"config.data.eval_fraction must be in [0, 1), got {d.eval_fraction}.")
    for name in ("language_alpha", "tokenizer_alpha"):
        _require(0.0 <= d[name] <= 1.0, f"config.data.{name} must be in [0, 1] (1: sample languages in proportion to "
                                        f"their text, 0: uniformly), got {d[name]}.")
    _require(d.eval_num_examples >= 1,
             f"config.data.eval_num_examples must be at least 1 (the held-out set is evaluated every "
             f"eval_every_steps and at the end), got {d.eval_num_examples}.")
    _require(
        d.tokenizer_vocab_size <= m.vocab_size,
        f"config.data.tokenizer_vocab_size ({d.tokenizer_vocab_size}) is larger than config.model.vocab_size "
        f"({m.vocab_size}); raise the model's vocab_size or train a smaller tokenizer.",
    )

    t = config.train
    _require(t.global_batch_size > 0, f"config.train.global_batch_size must be positive, got {t.global_batch_size}.")
    _require(t.num_train_steps > 0, f"config.train.num_train_steps must be positive, got {t.num_train_steps}.")
    _require(t.learning_rate > 0, f"config.train.learning_rate must be positive, got {t.learning_rate}.")
    _require(0 <= t.warmup_steps <= t.num_train_steps,
             f"config.train.warmup_steps ({t.warmup_steps}) must be within [0, num_train_steps "
             f"({t.num_train_steps})].")
    from bert_jax.pretraining import optim  # here: config.py loads without jax

    optim.validate_train(t)
    _require(t.dropout_prng in DROPOUT_PRNGS,
             f"config.train.dropout_prng={t.dropout_prng!r} is not one of {DROPOUT_PRNGS}.")
    for name in ("log_every_steps", "eval_every_steps", "eval_batch_size"):
        _require(t[name] > 0, f"config.train.{name} must be positive, got {t[name]}.")
    _require(t.max_consecutive_nonfinite_steps >= 0,
             f"config.train.max_consecutive_nonfinite_steps must be 0 (never restore) or positive, "
             f"got {t.max_consecutive_nonfinite_steps}.")
    _require(all(isinstance(s, int) and s > 0 for s in t.debug_poison_steps),
             f"config.train.debug_poison_steps must list step numbers >= 1, got {t.debug_poison_steps}.")
    _require(config.mesh.fsdp >= 1, f"config.mesh.fsdp must be at least 1 (1: no sharding), got {config.mesh.fsdp}.")
    _require(config.checkpoint.every_steps > 0,
             f"config.checkpoint.every_steps must be positive, got {config.checkpoint.every_steps}.")
    # Orbax reads max_to_keep=0 as "keep none": a run would end with no checkpoint and restart from step 0.
    _require(config.checkpoint.max_to_keep >= 1,
             f"config.checkpoint.max_to_keep must be at least 1 (the newest checkpoint is what a resume starts "
             f"from), got {config.checkpoint.max_to_keep}; give a large number to keep every checkpoint.")
    return config
