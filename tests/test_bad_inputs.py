"""The bad-input catalogue: every mistake a user can make that we know of, and what they are told.

Each case provokes one bad input through the library function the entrypoint calls, wrapped as the
entrypoint wraps it (`bert_jax.cli.run`), and asserts one line `error: <message>` (exit status 1) whose
message names the problem and the fix. A few cases run `python -m bert_jax.pretrain` itself to check
the exit status and the last line of stderr. Cases that start from an existing run directory also
check that nothing in it was written over. The README's "When things go wrong" table is this list.
"""

import dataclasses
import errno
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

import jax
import ml_collections
import orbax.checkpoint as ocp
import pytest
from test_loop import _small_config

from bert_jax import cli
from bert_jax import config as config_lib
from bert_jax.finetuning import config as finetune_config
from bert_jax.finetuning import qa, task_files, tasks
from bert_jax.hf import convert as hf_convert
from bert_jax.pretraining import loop, run_checkpoint
from bert_jax.runtime import parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Case:
    id: str
    provoke: Callable  # (ctx) -> None, raising what the entrypoint turns into `error: ...`; or argv for `python -m`
    message: str  # regex the one-line message must match: the problem and the fix
    subprocess: bool = False


class Context:
    """What a case may use: a fresh tmp_path and the session's small corpus, tokenizer and trained run."""

    def __init__(self, tmp_path, request):
        self.tmp_path, self._request = tmp_path, request

    def __getattr__(self, name):  # fixtures on demand, so a case builds only what it needs
        return self._request.getfixturevalue(name)

    def config(self, **data):
        config = _small_config(self.corpus_file, "", self.small_tokenizer.model_path, num_steps=3)
        config.data.eval_fraction = 0.2
        config.data.update(data)
        return config

    def pretrain(self, config, workdir=None):
        return loop.train_and_evaluate(config, str(workdir or self.tmp_path / "run"))

    def file(self, name, content: bytes) -> str:
        path = self.tmp_path / name
        path.write_bytes(content)
        return str(path)


def _tree_digest(directory) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pathlib.Path(directory).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_file, small_tokenizer):
    """A run directory with a checkpoint at step 3 (copied by each case that resumes it)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    config = _small_config(corpus_file, "", small_tokenizer.model_path, num_steps=3)
    config.data.eval_fraction = 0.2
    config.checkpoint.async_save = False
    loop.train_and_evaluate(config, str(workdir))
    return workdir, config


def _copy_trained_run(ctx):
    source, config = ctx.trained_run
    workdir = ctx.tmp_path / "run"
    shutil.copytree(source, workdir)
    return workdir, config_lib.from_stored(config.to_dict())


# ------------------------------------------------------------------ corpora

def _corpus_case(ctx, content: bytes, *, train_tokenizer=False):
    config = ctx.config(corpus=ctx.file("corpus.txt", content))
    if train_tokenizer:
        config.data.tokenizer_model = ""
    ctx.pretrain(config)


def _fifty_megabyte_line(ctx):
    path = ctx.tmp_path / "one_line.txt"
    with open(path, "w", encoding="utf-8") as f:
        chunk = "word " * 200_000  # 1 MB
        f.writelines(chunk for _ in range(50))
    ctx.pretrain(ctx.config(corpus=str(path)))


_PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)) * 4
_LATIN1 = "Le café était fermé.\nÀ bientôt, dit-elle.\n\nUne autre histoire.\nFin.\n".encode("latin-1")


# ------------------------------------------------------------------ configs

def _validate(**overrides):
    def provoke(ctx):
        config = config_lib.default_config()
        for path, value in overrides.items():
            group, name = path.split("__")
            config[group][name] = value
        config_lib.validate(config)
    return provoke


def _config_file_with_unknown_key(ctx):
    config = config_lib.default_config()
    config.train.num_train_step = 1000  # a config file may add keys: nothing but validate() notices
    config_lib.validate(config)


def _config_file_with_wrong_type(ctx):
    values = config_lib.default_config().to_dict()
    values["train"]["learning_rate"] = "1e-4"  # a file that builds its ConfigDict from a dict literal
    config_lib.validate(ml_collections.ConfigDict(values))


def _finetune_config_with_unknown_key(ctx):
    config = finetune_config.default_config()
    config.train.warmup_steps = 100  # fine-tuning warms up by proportion
    finetune_config.validate(config)


def _finetune_config_with_wrong_type(ctx):
    values = finetune_config.default_config().to_dict()
    values["model"]["hidden_dropout_prob"] = "0.2"
    finetune_config.validate(ml_collections.ConfigDict(values))


def _model_vocab_smaller_than_tokenizer(ctx):
    config = ctx.config()
    config.model.vocab_size = config.data.tokenizer_vocab_size = 200  # the tokenizer has about 280 pieces
    ctx.pretrain(config)


# ------------------------------------------------------------------ run directories and disks

def _workdir_not_writable(ctx):
    parent = ctx.tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o500)
    workdir = parent / "run"
    if os.access(parent, os.W_OK):  # root writes anywhere: a path below a regular file fails for everyone
        workdir = pathlib.Path(ctx.file("a_file", b"")) / "run"
    try:
        ctx.pretrain(ctx.config(), workdir)
    finally:
        parent.chmod(0o700)


def _resume_with_another_model(ctx):
    workdir, config = _copy_trained_run(ctx)
    before = _tree_digest(workdir)
    config.model.update({"hidden_size": 64, "num_attention_heads": 4})
    config.train.num_train_steps = 6
    try:
        ctx.pretrain(config, workdir)
    finally:
        assert _tree_digest(workdir) == before  # not even config.json was rewritten


def _disk_full_while_checkpointing(ctx):
    workdir, config = _copy_trained_run(ctx)
    before = _tree_digest(workdir / "checkpoints")
    config.train.num_train_steps = 6

    def save_on_a_full_disk(manager, step, *args, **kwargs):
        partial = pathlib.Path(manager.directory) / f"{step}.orbax-checkpoint-tmp-1"
        (partial / "state").mkdir(parents=True)
        (partial / "state" / "d").write_bytes(b"half a")
        raise OSError(errno.ENOSPC, "No space left on device", str(partial / "state" / "d"))

    patch = pytest.MonkeyPatch()
    patch.setattr(ocp.CheckpointManager, "save", save_on_a_full_disk)
    try:
        ctx.pretrain(config, workdir)
    finally:
        patch.undo()
        after = _tree_digest(workdir / "checkpoints")
        assert {name: after[name] for name in before} == before  # step 3 is byte for byte as it was
        restored = run_checkpoint.restore_run_checkpoint(str(workdir))  # and still restores
        assert int(jax.device_get(restored.state.step)) == 3


# ------------------------------------------------------------------ devices and processes

def _batch_not_divisible(ctx):
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"data": -1}))
    parallel.check_batch_size(12, mesh)  # 8 fake CPU devices


def _mesh_larger_than_devices(ctx):
    parallel.make_mesh(ml_collections.ConfigDict({"data": 16}))


def _num_processes_without_coordinator(ctx):
    parallel.initialize_distributed(coordinator_address="", num_processes=4, process_id=-1)


def _process_id_outside_launch(ctx):
    parallel.initialize_distributed(coordinator_address="localhost:1234", num_processes=2, process_id=2)


# ------------------------------------------------------------------ fine-tuning data

def _label_outside_label_set(ctx):
    path = ctx.file("dev.tsv", b"sentence\tlabel\na fine film\t1\na film with a bad label\t7\n")
    task_files.read_glue_tsv(path, tasks.TASKS["sst2"], "validation")


def _squad(context, answer, start):
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Who?", "answers": [{"text": answer, "answer_start": start}]}]}]}]}).encode()


def _squad_answer_outside_context(ctx):
    task_files.read_squad_json(ctx.file("train.json", _squad("The cat sat.", "dog", 40)))


def _squad_answer_not_in_context(ctx):
    example = qa.QAExample("q1", "Who sat?", "The cat sat on the mat.", (qa.Answer("dog", 4),))
    qa.make_qa_features([example], ctx.small_tokenizer, max_seq_length=32, doc_stride=16, max_query_length=8,
                        is_training=True)


def _finetune_checkpoint_missing(ctx):
    from bert_jax.finetuning import transfer
    transfer.load_pretrained(str(ctx.tmp_path / "no_such_export"))


# ------------------------------------------------------------------ tokenizers and HF directories

def _tokenizer_not_sentencepiece(ctx):
    ctx.pretrain(ctx.config(tokenizer_model=ctx.file("vocab.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")))


def _tokenizer_missing(ctx):
    ctx.pretrain(ctx.config(tokenizer_model=str(ctx.tmp_path / "spm.model")))


def _hf_directory(ctx):
    from flax import nnx

    from bert_jax.hf import files as hf_files
    from bert_jax.model import pretraining_heads
    config = ctx.config()
    params = nnx.to_pure_dict(nnx.state(pretraining_heads.build_model(config, seed=0), nnx.Param))
    directory = ctx.tmp_path / "hf"
    hf_files.write_hf_directory(str(directory), params, config, ctx.small_tokenizer)
    return directory


def _hf_with_tensors(change):
    def provoke(ctx):
        from safetensors.numpy import load_file, save_file
        directory = _hf_directory(ctx)
        tensors = load_file(str(directory / "model.safetensors"))
        save_file(change(tensors), str(directory / "model.safetensors"))
        hf_convert.import_hf_directory(str(directory), str(ctx.tmp_path / "export"))
    return provoke


def _missing(tensors):
    return {k: v for k, v in tensors.items() if k != "bert.encoder.layer.1.output.dense.bias"}


def _renamed(tensors):
    return {k.replace("attention.self.query", "attention.self.q_proj"): v for k, v in tensors.items()}


def _hf_without_weights(ctx):
    directory = _hf_directory(ctx)
    (directory / "model.safetensors").unlink()
    hf_convert.import_hf_directory(str(directory), str(ctx.tmp_path / "export"))


def _with_model(config, **model):
    config.model.update(model)
    return config


def _workdir_inside_corpus(ctx):
    texts = ctx.tmp_path / "texts"
    texts.mkdir()
    shutil.copy(ctx.corpus_file, texts / "corpus.txt")
    ctx.pretrain(ctx.config(corpus=str(texts)), workdir=texts / "run")


def _glue_train_without_labels(ctx):
    task_files.read_glue_tsv(ctx.file("train.tsv", b"sentence\na fine film\na dull one\n"), tasks.TASKS["sst2"],
                             "train")


def _task_file_latin1(ctx):
    path = ctx.file("dev.tsv", b"sentence\tlabel\na fine film\t1\ncaf\xe9 au lait\t0\n")
    task_files.read_glue_tsv(path, tasks.TASKS["sst2"], "validation")


def _conll_latin1(ctx):
    path = ctx.file("train.txt", b"-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nM\xfcller NNP I-NP B-PER\n")
    task_files.read_conll(path, tasks.TASKS["conll2003"], "train")


def _swag_train_without_labels(ctx):
    header = b"video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3\n"
    row = b"v,0,s,He walks.,He,gold,runs.,sits.,flies.,sleeps.\n"
    task_files.read_swag_csv(ctx.file("train.csv", header + row), tasks.TASKS["swag"], "train")


def _squad_answer_start_not_an_integer(ctx):
    task_files.read_squad_json(ctx.file("train.json", _squad("The cat sat.", "cat", "four")))


def _hf_config_edited(content: bytes):
    def provoke(ctx):
        directory = _hf_directory(ctx)
        (directory / "config.json").write_bytes(content)
        hf_convert.import_hf_directory(str(directory), str(ctx.tmp_path / "export"))
    return provoke


# ------------------------------------------------------------------ round two: every command, hostile inputs

@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_run):
    """A params-only export of the trained run, for the commands that start from one."""
    output = tmp_path_factory.mktemp("export") / "params"
    run_checkpoint.export_params(str(trained_run[0]), str(output))
    return str(output)


def _export_step_that_does_not_exist(ctx):
    workdir, _ = _copy_trained_run(ctx)
    run_checkpoint.export_params(str(workdir), str(ctx.tmp_path / "export"), step=7)


def _export_onto_a_file(ctx):
    run_checkpoint.export_params(str(ctx.trained_run[0]), ctx.file("params.bin", b"keep me"))


def _evaluate_workdir_without_checkpoints(ctx):
    from bert_jax.pretraining import evaluation
    (ctx.tmp_path / "run").mkdir()
    evaluation.evaluate_checkpoint(str(ctx.tmp_path / "run"))


_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256))


def _evaluate_on_a_gzip_corpus(ctx):
    from bert_jax.pretraining import evaluation
    evaluation.evaluate_checkpoint(str(ctx.trained_run[0]), corpus=ctx.file("wiki.txt.gz", _GZIP))


def _tokenizer_output_below_a_file(ctx):
    from bert_jax.data import sentencepiece_tokenizer
    sentencepiece_tokenizer.train_tokenizer([ctx.corpus_file], str(pathlib.Path(ctx.file("spm", b"")) / "spm"), 100)


def _hf_directory_of_another_architecture(ctx):
    directory = ctx.tmp_path / "gpt2"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 2}))
    (directory / "model.safetensors").write_bytes(b"")  # never read: the model type is refused first
    hf_convert.import_hf_directory(str(directory), str(ctx.tmp_path / "export"))


def _import_a_pretraining_workdir(ctx):
    hf_convert.import_hf_directory(str(ctx.trained_run[0]), str(ctx.tmp_path / "export"))


def _embed(ctx, **kwargs):
    from bert_jax.finetuning import embedding, transfer
    embedder = embedding.Embedder(transfer.load_pretrained(ctx.exported), layers=[-1], pooling="cls",
                                  combination="concat")
    embedder(["a small river.", "the old king."], **kwargs)


def _finetune_with_too_long_sequences(ctx):
    from bert_jax.finetuning import runner
    config = finetune_config.default_config()
    config.task = "sst2"
    config.init_checkpoint = ctx.exported
    config.data.max_seq_length = 128  # the export has 64 positions
    runner.finetune(config, str(ctx.tmp_path / "finetune"))


# ------------------------------------------------------------------ the catalogue

def _pretrain_argv(*flags):
    return ["bert_jax.pretrain", "--config=configs/bert_tiny.py", "--workdir={tmp}/run", *flags]


CASES = [
    # Corpora.
    Case("corpus_missing", lambda ctx: ctx.pretrain(ctx.config(corpus=str(ctx.tmp_path / "nowhere"))),
         r"no text files match config\.data\.corpus=.*nowhere.*give a file, a directory or a glob"),
    Case("corpus_empty", lambda ctx: _corpus_case(ctx, b""),
         r"corpus\.txt' has no documents after tokenization; give text with one sentence per line"),
    Case("corpus_empty_tokenizer_training", lambda ctx: _corpus_case(ctx, b"\n\n", train_tokenizer=True),
         r"tokenizer training input .*corpus\.txt.* has no text; give files with one sentence per line"),
    Case("corpus_binary", lambda ctx: _corpus_case(ctx, _PNG, train_tokenizer=True),
         r"corpus\.txt looks like a binary file .*NUL bytes.*remove it from config\.data\.corpus"),
    Case("corpus_not_utf8", lambda ctx: _corpus_case(ctx, _LATIN1),
         r"corpus\.txt is not UTF-8 text \(byte b'\\xe9' near line 1\): convert it, e\.g\. `iconv -f latin1"),
    Case("corpus_single_50mb_line", _fifty_megabyte_line,
         r"one_line\.txt line 1 is longer than 1,000,000 characters.*split it into one sentence per line"),
    Case("no_eval_data", lambda ctx: ctx.pretrain(ctx.config(eval_fraction=0.0)),
         r"no evaluation data: set config\.data\.eval_corpus or a config\.data\.eval_fraction > 0"),
    # Configs: unknown keys and wrong types, from the command line and from files.
    Case("cli_unknown_config_key", _pretrain_argv("--config.train.num_train_step=3"),
         r"--config\.train\.num_train_step on the command line is not a field of the config; did you mean "
         r"--config\.train\.num_train_steps\?", subprocess=True),
    Case("cli_wrong_value_type", _pretrain_argv("--config.train.num_train_steps=abc"),
         r"flag --config\.train\.num_train_steps=abc: invalid literal for int.*give "
         r"--config\.train\.num_train_steps a value of the field's type", subprocess=True),
    Case("config_file_wrong_type_subprocess", ["bert_jax.pretrain", "--config={tmp}/bad_config.py",
                                              "--workdir={tmp}/run"],
         r"config file .*bad_config\.py line 5 failed: TypeError: .*'num_train_steps'.*fix that line",
         subprocess=True),
    Case("config_file_unknown_key_subprocess", ["bert_jax.pretrain", "--config={tmp}/bad_key.py",
                                               "--workdir={tmp}/run"],
         r"config\.train\.bogus is not a config field; remove it", subprocess=True),
    Case("config_file_unknown_key", _config_file_with_unknown_key,
         r"config\.train\.num_train_step is not a config field; did you mean config\.train\.num_train_steps\?"),
    Case("config_file_wrong_type", _config_file_with_wrong_type,
         r"config\.train\.learning_rate='1e-4' is of type str, but the field takes float values.*give a value "
         r"of type float"),
    Case("finetune_config_unknown_key", _finetune_config_with_unknown_key,
         r"config\.train\.warmup_steps is not a config field; remove it"),
    Case("finetune_config_wrong_type", _finetune_config_with_wrong_type,
         r"config\.model\.hidden_dropout_prob='0\.2' is of type str, but the field takes float values"),
    # Inconsistent model shapes.
    Case("heads_do_not_divide_hidden_size", _validate(model__num_attention_heads=5),
         r"hidden_size \(768\) is not divisible by config\.model\.num_attention_heads \(5\); choose a head count"),
    Case("sequence_longer_than_positions", _validate(data__max_seq_length=1024),
         r"max_seq_length \(1024\) is larger than config\.model\.max_position_embeddings \(512\); lower the "
         r"sequence length or raise"),
    Case("albert_embedding_larger_than_hidden", _validate(model__embedding_size=1024),
         r"embedding_size \(1024\) is larger than config\.model\.hidden_size \(768\).*use an embedding_size below"),
    Case("tokenizer_vocab_larger_than_model_vocab", _validate(data__tokenizer_vocab_size=40_000),
         r"tokenizer_vocab_size \(40000\) is larger than config\.model\.vocab_size \(30522\); raise the model's"),
    Case("model_vocab_smaller_than_tokenizer", _model_vocab_smaller_than_tokenizer,
         r"has \d+ pieces but config\.model\.vocab_size is 200; raise config\.model\.vocab_size or use a smaller"),
    # Run directories and disks.
    Case("workdir_empty", ["bert_jax.pretrain", "--config=configs/bert_tiny.py", "--workdir="],
         r"flag --workdir=: --workdir is empty; give a path \(an unset shell variable\?\)", subprocess=True),
    Case("export_output_empty", ["bert_jax.export", "--workdir={tmp}/run", "--output="],
         r"flag --output=: --output is empty; give a path", subprocess=True),
    Case("workdir_inside_the_corpus_folder", _workdir_inside_corpus,
         r"--workdir .*texts/run is inside the corpus folder .*texts, so the run would read its own files as text; "
         r"put the workdir outside the corpus folder"),
    Case("workdir_not_writable", _workdir_not_writable,
         r"cannot use .*(read_only|a_file).*: (permission denied|a parent is a file, not a directory); choose a "
         r"--workdir/--output directory you can write to"),
    Case("resume_with_another_model", _resume_with_another_model,
         r"the checkpoints in .*checkpoints \(newest: step 3\) were written for another model: "
         r"config\.model\.hidden_size is 32 there and 64 now.*run with the config they were written with, or "
         r"give a new --workdir"),
    Case("disk_full_while_checkpointing", _disk_full_while_checkpointing,
         r"no space left on device while saving the checkpoint of step 6 in .*checkpoints; the complete "
         r"checkpoints there \(3\) are untouched: free space .* run the same command again to resume"),
    Case("model_too_large_for_memory", lambda ctx: ctx.pretrain(_with_model(ctx.config(), vocab_size=200_000_000)),
         r"the model needs at least [\d,.]+ GiB per device for its 6,\d{3},\d{3},\d{3} parameters, their gradients "
         r"and optimizer state, but [\d,.]+ GiB are available; lower config\.model's sizes"),
    # Tokenizers.
    Case("tokenizer_not_sentencepiece", _tokenizer_not_sentencepiece,
         r"vocab\.txt is not a SentencePiece model .*give a \.model file"),
    Case("tokenizer_missing", _tokenizer_missing,
         r"tokenizer model not found: .*spm\.model; set config\.data\.tokenizer_model to a SentencePiece"),
    # Devices and processes.
    Case("batch_not_divisible_over_devices", _batch_not_divisible,
         r"global_batch_size \(12\) is not divisible by the 8 devices of the mesh; use a multiple of 8"),
    Case("mesh_larger_than_devices", _mesh_larger_than_devices,
         r"config\.mesh\.data=16 but 8 devices are available; use -1 for all devices"),
    Case("num_processes_without_coordinator", _num_processes_without_coordinator,
         r"inconsistent multi-process launch: --coordinator_address='', --num_processes=4.*give all three"),
    Case("process_id_outside_launch", _process_id_outside_launch,
         r"inconsistent multi-process launch: .*--num_processes=2, --process_id=2.*0 <= process_id < num_processes"),
    # Fine-tuning data and checkpoints.
    Case("finetune_label_outside_label_set", _label_outside_label_set,
         r"dev\.tsv:3: label '7' is not a sst2 label; valid labels: "),
    Case("squad_answer_outside_context", _squad_answer_outside_context,
         r"question id 'q1': answer_start 40 puts 'dog' outside its 12-character context; fix answer_start"),
    Case("squad_answer_not_in_context", _squad_answer_not_in_context,
         r"question 'q1': the answer 'dog' is not at its answer_start 4 \(the context has 'cat' there\); fix answer_start or the answer text.*"
         r"--config\.data\.skip_bad_answers=true"),
    Case("finetune_init_checkpoint_missing", _finetune_checkpoint_missing,
         r"config\.init_checkpoint=.*no_such_export is neither a params-only export"),
    # Hugging Face directories.
    Case("hf_missing_tensor", _hf_with_tensors(_missing),
         r"checkpoint lacks 1 encoder tensors, e\.g\. \['bert\.encoder\.layer\.1\.output\.dense\.bias'\];.*re-download"),
    Case("hf_renamed_tensor", _hf_with_tensors(_renamed),
         r"checkpoint lacks 4 encoder tensors, e\.g\. \['bert\.encoder\.layer\.0\.attention\.self\.query.*"
         r"present but unknown: \[.*q_proj"),
    Case("hf_config_not_json", _hf_config_edited(b'{"model_type": "bert", "hidden_size": 32,'),
         r"hf/config\.json is not valid JSON \(.*\); re-download or re-save the model"),
    Case("hf_config_not_an_object", _hf_config_edited(b'["bert"]'),
         r"hf/config\.json holds a JSON list, not an object; re-download or re-save"),
    Case("hf_config_without_sizes", _hf_config_edited(b'{"model_type": "bert"}'),
         r"config\.json lacks \['vocab_size', 'hidden_size'.*it does not describe a bert model"),
    # Checkpoint retention and evaluation sizes.
    Case("max_to_keep_zero", _validate(checkpoint__max_to_keep=0),
         r"config\.checkpoint\.max_to_keep must be at least 1 .*got 0; give a large number to keep every checkpoint"),
    Case("max_to_keep_negative", _validate(checkpoint__max_to_keep=-1),
         r"config\.checkpoint\.max_to_keep must be at least 1 .*got -1"),
    Case("eval_num_examples_zero", _validate(data__eval_num_examples=0),
         r"config\.data\.eval_num_examples must be at least 1 .*got 0"),
    # Fine-tuning files in other shapes and encodings.
    Case("glue_train_without_label_column", _glue_train_without_labels,
         r"train\.tsv:1: the header sentence has no label column 'label', but the train split is scored; give "
         r"the sst2 TSV with its labels"),
    Case("task_file_latin1", _task_file_latin1,
         r"dev\.tsv:3: byte 0xe9 is not UTF-8; save the file as UTF-8, e\.g\. `iconv -f cp1252 -t utf-8"),
    Case("conll_latin1", _conll_latin1, r"train\.txt:4: byte 0xfc is not UTF-8; save the file as UTF-8"),
    Case("swag_train_without_label_column", _swag_train_without_labels,
         r"train\.csv:1: the header has no 'label' column, but the train split is scored"),
    Case("squad_answer_start_not_an_integer", _squad_answer_start_not_an_integer,
         r"question id 'q1': answer_start 'four' is not a character offset; give the answer's start as an integer"),
    Case("hf_without_weights", _hf_without_weights, r"hf has neither model\.safetensors nor pytorch_model\.bin; point --input at a Hugging Face model"),
    # Round two. Config files that are not there, not Python, or raise: one line naming the file (and line).
    Case("config_file_missing", ["bert_jax.pretrain", "--config=configs/bert_tny.py", "--workdir={tmp}/run"],
         r"--config=configs/bert_tny\.py: no such config file \(looked from .*\); did you mean configs/bert_tiny\.py\?",
         subprocess=True),
    Case("config_file_is_a_directory", ["bert_jax.prepare_corpus", "--config={tmp}", "--workdir={tmp}/run"],
         r"--config=.* is a directory, not a config file; give a file such as configs/bert_tiny\.py", subprocess=True),
    Case("config_file_syntax_error", ["bert_jax.pretrain", "--config={tmp}/syntax_error.py", "--workdir={tmp}/run"],
         r"config file .*syntax_error\.py line 3 is not valid Python: SyntaxError: .*; fix that line", subprocess=True),
    Case("config_file_raises", ["bert_jax.finetune", "--config={tmp}/raises.py", "--workdir={tmp}/run"],
         r"config file .*raises\.py line 4 failed: KeyError: 'BERT_CHECKPOINT'; fix that line\.$", subprocess=True),
    Case("config_file_without_get_config", ["bert_jax.summary", "--config={tmp}/no_get_config.py"],
         r"config file .*no_get_config\.py defines no get_config\(\); .*as configs/bert_tiny\.py does",
         subprocess=True),
    Case("stray_argument", ["bert_jax.export", "--workdir={tmp}/run", "--output", "{tmp}/out", "format=hf"],
         r"unexpected arguments \['format=hf'\]; every option is a flag written --name=value", subprocess=True),
    # Tokenizer training and tokenizer files.
    Case("tokenizer_output_is_a_directory", ["bert_jax.train_tokenizer", "--input=configs/bert_tiny.py",
                                              "--output={tmp}/", "--vocab_size=100"],
         r"--output=.*/ is a directory, but --output is a file prefix; give e\.g\. --output=.*/spm to write "
         r".*/spm\.model", subprocess=True),
    Case("tokenizer_input_compressed", ["bert_jax.train_tokenizer", "--input={tmp}/wiki.txt.gz", "--output={tmp}/spm"],
         r"wiki\.txt\.gz is gzip-compressed, not text: decompress it first \(`gunzip .*wiki\.txt\.gz`\) and point "
         r"--input at the text", subprocess=True),
    Case("tokenizer_output_below_a_file", _tokenizer_output_below_a_file,
         r"cannot use .*spm: it exists and is not a directory; choose a --workdir/--output directory"),
    Case("tokenizer_model_empty", lambda ctx: ctx.pretrain(ctx.config(tokenizer_model=ctx.file("spm.model", b""))),
         r"tokenizer model .*spm\.model is empty \(0 bytes.*\); give a \.model file .* or leave "
         r"config\.data\.tokenizer_model empty to train one"),
    Case("tokenizer_model_is_a_directory", lambda ctx: ctx.pretrain(ctx.config(tokenizer_model=str(ctx.tmp_path))),
         r"tokenizer model .* is a directory; set config\.data\.tokenizer_model to the \.model file in it \(e\.g\. "
         r".*/spm\.model\)"),
    # Corpora and evaluation sets given compressed, and runs without checkpoints.
    Case("corpus_gzip_compressed", lambda ctx: _corpus_case(ctx, _GZIP),
         r"corpus\.txt is gzip-compressed, not text: decompress it first \(`gunzip .*`\) and point "
         r"config\.data\.corpus at the text"),
    Case("evaluate_corpus_gzip_compressed", _evaluate_on_a_gzip_corpus,
         r"wiki\.txt\.gz is gzip-compressed, not text: .* point --corpus at the text"),
    Case("evaluate_workdir_without_checkpoints", _evaluate_workdir_without_checkpoints,
         r"no checkpoints in .*run/checkpoints: point --workdir at a pretraining run directory"),
    # Exports.
    Case("export_step_that_does_not_exist", _export_step_that_does_not_exist,
         r"no checkpoint for step 7 in .*checkpoints; available steps: \[3\]: give --step one of them"),
    Case("export_onto_a_file", _export_onto_a_file,
         r"params\.bin already exists and is not an empty directory; give an output path that does not exist yet"),
    # Hugging Face imports of what is not a BERT-family model directory.
    Case("hf_directory_of_another_architecture", _hf_directory_of_another_architecture,
         r"gpt2/config\.json has model_type='gpt2', not one of \('bert', 'albert', 'roberta', 'electra', 'distilbert', "
         r"'modernbert'\): "
         r"only BERT-family encoders can be imported"),
    Case("hf_import_of_a_pretraining_workdir", _import_a_pretraining_workdir,
         r"run is a bert_jax pretraining run \(it has checkpoints\), not a Hugging Face directory: fine-tuning and "
         r"embed take it as it is"),
    # Embeddings and fine-tuning with sizes the checkpoint cannot take.
    Case("embed_output_is_a_directory", ["bert_jax.embed", "--checkpoint={tmp}/export", "--input={tmp}/raises.py",
                                          "--output={tmp}"],
         r"--output .* is a directory; give a file name such as .*/embeddings\.npy", subprocess=True),
    Case("embed_batch_size_zero", lambda ctx: _embed(ctx, batch_size=0, max_seq_length=16),
         r"batch_size=0 embeds nothing; give --batch_size=1 or more"),
    Case("embed_sequence_too_short", lambda ctx: _embed(ctx, max_seq_length=1),
         r"max_seq_length=1 leaves no room for text between \[CLS\] and \[SEP\]; give --max_seq_length=3 or more"),
    Case("embed_sequence_longer_than_positions", lambda ctx: _embed(ctx, max_seq_length=128),
         r"max_seq_length=128 exceeds the encoder's 64 positions; give --max_seq_length=64 or less"),
    Case("finetune_sequence_longer_than_positions", _finetune_with_too_long_sequences,
         r"config\.data\.max_seq_length=128 exceeds the checkpoint's max_position_embeddings=64; lower it to 64"),
    # Training settings that cannot work, refused before anything is built.
    Case("global_batch_size_zero", _validate(train__global_batch_size=0),
         r"config\.train\.global_batch_size must be positive, got 0"),
    Case("num_train_steps_zero", _validate(train__num_train_steps=0, train__warmup_steps=0),
         r"config\.train\.num_train_steps must be positive, got 0"),
    Case("warmup_longer_than_training", _validate(train__num_train_steps=100),
         r"config\.train\.warmup_steps \(10000\) must be within \[0, num_train_steps \(100\)\]"),
    Case("mask_rate_above_one", _validate(masking__mask_rate=15.0),
         r"config\.masking\.mask_rate must be in \(0, 1\), got 15\.0"),
    Case("dropout_of_one", _validate(model__hidden_dropout_prob=1.0),
         r"config\.model\.hidden_dropout_prob must be in \[0, 1\), got 1\.0"),
    Case("full_sentences_with_nsp", _validate(data__instance_format="full_sentences"),
         r"instance_format='full_sentences' packs text without sentence pairs, so it needs config\.objective='mlm'"),
    Case("fused_attention_with_dropout", _validate(model__attention_impl="dot_product"),
         r"attention_impl='dot_product' has no attention dropout, but config\.model\.attention_probs_dropout_prob "
         r"is 0\.1; set it to 0\.0"),
]

_CONFIG_FILES = {
    "bad_config.py": 'from configs import bert_tiny\n\ndef get_config():\n    c = bert_tiny.get_config()\n'
                     '    c.train.num_train_steps = "many"\n    return c\n',
    "bad_key.py": "from configs import bert_tiny\n\ndef get_config():\n    c = bert_tiny.get_config()\n"
                  "    c.train.bogus = 1\n    return c\n",
    "syntax_error.py": "from configs import bert_tiny\n\ndef get_config()\n    return bert_tiny.get_config()\n",
    "raises.py": "import os\n\ndef get_config():\n    return os.environ['BERT_CHECKPOINT']\n",
    "no_get_config.py": "from configs import bert_tiny\n\nconfig = bert_tiny.get_config()\n",
    "wiki.txt.gz": _GZIP,
}


def test_the_catalogue_has_at_least_25_distinct_cases():
    assert len({case.id for case in CASES}) == len(CASES) >= 25


# The two cases that each run a whole pretraining first: run with -m slow to keep CI under 20 minutes.
_SLOW_CASES = ("resume_with_another_model", "disk_full_while_checkpointing")


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.id in _SLOW_CASES else c
                                  for c in CASES if not c.subprocess], ids=lambda c: c.id)
def test_bad_input_is_one_line_naming_problem_and_fix(case, tmp_path, request):
    with pytest.raises(SystemExit) as exited:
        cli.run(["bert_jax"], lambda: case.provoke(Context(tmp_path, request)))
    message = exited.value.code
    assert isinstance(message, str), message  # sys.exit(str): printed to stderr, exit status 1
    assert message.startswith("error: ") and "\n" not in message, message
    assert re.search(case.message, message), message


@pytest.mark.parametrize("case", [c for c in CASES if c.subprocess], ids=lambda c: c.id)
def test_bad_command_line_exits_1_with_one_line(case, tmp_path):
    for name, content in _CONFIG_FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.provoke]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(case.message, last), last
    assert not (tmp_path / "run").exists()  # refused before anything was written
