"""Time to quality of what users would run instead (issue 21 point 1): transformers' Trainer with
BertForMaskedLM and DataCollatorForLanguageModeling, the path of HF's examples/pytorch/language-modeling/
run_mlm.py, beside the bert_jax runs of run_ttq.py, on the same text, ids, model size, budget and held-out
scoring.

    python benchmarks/time_to_quality/run_hf_trainer.py --out DIR [--corpora default,man] [--reference bert2018]
        [--budget_seconds S] [--clock wall|cpu] [--threads 2] [--points 16] [--dry_run]

Run it after run_ttq.py: for every corpus C it reads the reference run DIR/C/<reference>/ (its run.json, and
its workdir run/) and writes DIR/C/hf_trainer/run.json and curve.jsonl, which report.py reads like the others.
  1. Data: the reference run's own tokenized training split (its SentencePiece model, its held-out rule), so
     both sides see identical ids and the held-out documents stay out. As run_mlm.py does with a BERT
     tokenizer: each line (a sentence: the corpus has one per line) becomes [CLS] ids [SEP]; group_texts
     concatenates the lines of each batch of 1,000 (datasets.map's default) and cuts blocks of
     max_seq_length, dropping each batch's remainder. Unlike run_mlm.py's text loader, the blank lines
     between documents give no [CLS] [SEP] rows (the tokenized split does not keep them).
  2. Model and training: BertForMaskedLM with the reference's encoder (sizes, vocabulary, positions, segment
     table, dropout, initializer range) and HF's own initialisation; DataCollatorForLanguageModeling (15%,
     80/10/10, new masks each time) over a vocabulary-only wrapper of the SentencePiece model (a WordLevel
     tokenizer of its pieces, [PAD] [UNK] [CLS] [SEP] [MASK] at the ids bert_jax uses); Trainer's AdamW and
     linear schedule with the reference's batch size, peak rate, warmup fraction, weight decay, Adam betas
     and epsilon, gradient clipping and seed; float32 on the CPU, torch.set_num_threads(--threads).
  3. Budget: a calibration Trainer run (--calibration_steps, discarded) gives steps per wall and per CPU
     second after the first steps; max_steps = rate x budget x 0.97 on --clock (default: the reference's
     budget and clock), so the linear decay ends at the budget, as run_ttq.py sizes the bert_jax runs. A
     Trainer checkpoint (model, optimizer, scheduler) every max_steps / points steps.
  4. Clocks: a callback records the wall clock and the process's CPU seconds (all threads) at the end of
     every step that saves, minus those at the end of the first step; bert_jax's runs count from the end of
     their first (compiling) step the same way. Data preparation is outside the clock on both sides.
  5. Scoring: eval_checkpoints.py --hf_run converts each checkpoint with bert_jax.hf.names (the import_hf
     path) and scores it with the reference run's held-out rows, masks and eval step: the same rows and masks
     as the bert_jax models (15% token masking, at most 20 predictions, 80/10/10). The Trainer's model never
     sees segment id 1, so it is scored with every segment id 0 (mlm_accuracy); the score with the rows' own
     segment ids is kept beside it (mlm_accuracy_with_segments).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bert_jax.runtime import atomic

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MODEL = "hf_trainer"
LINES_PER_GROUP = 1000  # run_mlm.py's group_texts runs per datasets.map batch (1,000 rows by default)


def group_texts(sentences, *, cls_id: int, sep_id: int, block_size: int,
                lines_per_group: int = LINES_PER_GROUP) -> np.ndarray:
    """[num_blocks, block_size] int32: run_mlm.py's blocks from token-id sentences (one per text line).

    Each sentence becomes [CLS] ids [SEP]; every `lines_per_group` sentences are concatenated and cut into
    blocks of `block_size`, the group's remainder dropped."""
    blocks, group = [], []

    def flush():
        if group:
            ids = np.concatenate(group)
            usable = len(ids) // block_size * block_size
            blocks.append(ids[:usable].reshape(-1, block_size))
            group.clear()

    for sentence in sentences:
        group.append(np.concatenate([[cls_id], np.asarray(sentence, np.int32), [sep_id]]).astype(np.int32))
        if len(group) == lines_per_group:
            flush()
    flush()
    return np.concatenate(blocks) if blocks else np.zeros((0, block_size), np.int32)


def split_sentences(document: dict) -> list[np.ndarray]:
    """A tokenized document ({'tokens', 'sentence_lengths'}) as its sentences' id arrays."""
    ends = np.cumsum(document["sentence_lengths"])
    return np.split(np.asarray(document["tokens"]), ends[:-1])


def reference_settings(run_dir: str) -> tuple[dict, object]:
    """(the reference's run.json, its stored config): what the HF run must match."""
    from bert_jax import config as config_lib
    with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "run", "config.json"), encoding="utf-8") as f:
        config = config_lib.from_stored(json.load(f))
    return summary, config


def training_blocks(config, workdir: str) -> tuple[np.ndarray, object]:
    """(run_mlm.py's blocks of the reference run's training split, the run's tokenizer), from its caches."""
    from bert_jax.data import corpus as corpus_lib
    tokenizer, sources = corpus_lib.prepare_default_or_given(config.data, workdir)
    train = sources["train"]
    sentences = (sentence for index in range(len(train)) for sentence in split_sentences(train[index]))
    ids = tokenizer.special_ids
    return group_texts(sentences, cls_id=ids.cls, sep_id=ids.sep, block_size=config.data.max_seq_length), tokenizer


def hf_vocabulary(tokenizer):
    """A transformers tokenizer that only carries the SentencePiece model's pieces and special ids: what the
    collator needs (mask and pad ids, the special ids never masked, the vocabulary for random replacements).
    The data are ids already, so it never tokenizes text."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
    vocab = {tokenizer.id_to_piece(i): i for i in range(tokenizer.vocab_size)}
    ids = tokenizer.special_ids
    names = {field: tokenizer.id_to_piece(getattr(ids, field)) for field in ("pad", "unk", "cls", "sep", "mask")}
    wrapper = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token=names["unk"])),
                                      **{f"{field}_token": name for field, name in names.items()})
    if [wrapper.pad_token_id, wrapper.cls_token_id, wrapper.sep_token_id, wrapper.mask_token_id] != \
            [ids.pad, ids.cls, ids.sep, ids.mask] or len(wrapper) != tokenizer.vocab_size:
        raise SystemExit("error: the vocabulary wrapper does not reproduce the tokenizer's ids.")
    return wrapper


def hf_model_config(config, tokenizer) -> dict:
    """BertConfig fields of the reference's encoder (bert_jax.hf.names writes the same for export)."""
    from bert_jax.hf import names as hf_names
    from bert_jax.model import encoder
    fields = hf_names.encoder_config_dict(encoder.BertConfig.from_config(config.model), "bert",
                                          pad_token_id=tokenizer.special_ids.pad, bos_token_id=None, eos_token_id=None)
    fields.pop("model_type")
    return dict(fields, architectures=["BertForMaskedLM"])


class _Blocks:
    """The blocks as a map-style dataset of {'input_ids'} rows (what run_mlm.py's grouped dataset holds)."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, index):
        return {"input_ids": self.blocks[index].tolist()}


def train(blocks: np.ndarray, vocabulary, model_fields: dict, *, max_steps: int, save_every: int,
          record_every: int, output_dir: str, settings: dict) -> list[dict]:
    """One Trainer run in a fresh `output_dir`; returns, for the start (step 0), step 1, every
    `record_every`-th step and the last, {'step', 'wall', 'cpu'}: perf_counter and process_time seconds at
    the end of that step (before the Trainer saves that step's checkpoint)."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class Clock(TrainerCallback):
        def __init__(self):
            self.points = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.points.append({"step": 0, "wall": time.perf_counter(), "cpu": time.process_time()})

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step == 1 or step % record_every == 0 or step == max_steps:
                self.points.append({"step": step, "wall": time.perf_counter(), "cpu": time.process_time()})

    if os.path.exists(output_dir):  # an interrupted run's checkpoints would be scored as this run's
        shutil.rmtree(output_dir)
    torch.manual_seed(settings["seed"])
    model = BertForMaskedLM(BertConfig(**model_fields))
    collator = DataCollatorForLanguageModeling(vocabulary, mlm=True, mlm_probability=settings["mlm_probability"])
    arguments = TrainingArguments(
        output_dir=output_dir, max_steps=max_steps,
        per_device_train_batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        warmup_steps=max(1, round(settings["warmup_fraction"] * max_steps)), lr_scheduler_type="linear",
        weight_decay=settings["weight_decay"], adam_beta1=settings["adam_b1"], adam_beta2=settings["adam_b2"],
        adam_epsilon=settings["adam_eps"], max_grad_norm=settings["max_grad_norm"], seed=settings["seed"],
        save_strategy="steps", save_steps=save_every, logging_steps=save_every, eval_strategy="no",
        report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    clock = Clock()
    Trainer(model=model, args=arguments, train_dataset=_Blocks(blocks), data_collator=collator,
            callbacks=[clock]).train()
    return clock.points


def relative(points: list[dict]) -> list[dict]:
    """Each recorded step's wall and CPU seconds after the end of step 1 (step 1 itself included, at 0)."""
    first = next(p for p in points if p["step"] == 1)
    return [{"step": p["step"], "wall_seconds": p["wall"] - first["wall"], "cpu_seconds": p["cpu"] - first["cpu"]}
            for p in points if p["step"] >= 1]


def calibrate(blocks, vocabulary, model_fields, settings, steps: int, output_dir: str) -> dict:
    """Steps per wall / CPU second over the last 4/5 of a `steps`-step run (its start warms caches); one
    save, at the end, outside the timed steps (as run_ttq.py's calibration)."""
    points = train(blocks, vocabulary, model_fields, max_steps=steps, save_every=steps,
                   record_every=max(1, steps // 5), output_dir=output_dir, settings=settings)
    first, last = points[2], points[-1]  # [0]: the start, [1]: step 1
    rates = {f"steps_per_{clock}_second": (last["step"] - first["step"]) / max(last[clock] - first[clock], 1e-9)
             for clock in ("wall", "cpu")}
    return {"steps": steps, **rates}


def training_settings(summary: dict, config) -> dict:
    """The reference run's optimisation settings, as Trainer arguments."""
    overrides, t = summary["overrides"], config.train
    return {"batch_size": int(t.global_batch_size), "learning_rate": float(t.learning_rate),
            "warmup_fraction": overrides["train.warmup_steps"] / overrides["train.num_train_steps"],
            "weight_decay": float(t.weight_decay), "adam_b1": float(t.adam_b1), "adam_b2": float(t.adam_b2),
            "adam_eps": float(t.adam_eps), "max_grad_norm": float(t.max_grad_norm), "seed": int(t.seed),
            "mlm_probability": float(config.masking.mask_rate)}


def score(hf_run: str, reference_workdir: str, run_dir: str, masking: dict) -> list[dict]:
    """eval_checkpoints.py --hf_run: every Trainer checkpoint on the reference's held-out rows and masks."""
    eval_path = os.path.join(run_dir, "heldout_fixed_masking.jsonl")
    with open(os.path.join(run_dir, "eval.log"), "w", encoding="utf-8") as log:
        subprocess.check_call([sys.executable, os.path.join(HERE, "eval_checkpoints.py"), f"--hf_run={hf_run}",
                               f"--reference={reference_workdir}", f"--out={eval_path}",
                               f"--mask_rate={masking['mask_rate']}",
                               f"--max_predictions_per_seq={masking['max_predictions_per_seq']}",
                               f"--kind={masking['kind']}"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    with open(eval_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run_corpus(args, corpus: str) -> None:
    """Calibration, the timed Trainer run and the scoring on one corpus; writes run.json and curve.jsonl."""
    import torch
    import transformers
    # The real path: a reference linked in from another sweep's folder keeps the corpus paths its caches
    # were keyed by (else its default corpus would be tokenized again, under the linked path).
    reference_dir = os.path.realpath(os.path.join(args.out, corpus, args.reference))
    run_dir = os.path.join(args.out, corpus, MODEL)
    if os.path.exists(os.path.join(run_dir, "curve.jsonl")):
        print(f"{corpus}/{MODEL}: done already (curve.jsonl exists), skipped", flush=True)
        return
    if not os.path.exists(os.path.join(reference_dir, "run.json")):
        raise SystemExit(f"error: no {reference_dir}/run.json: run run_ttq.py with --models {args.reference} on "
                         f"corpus {corpus} first (its run gives the tokenizer, the split and the budget).")
    os.makedirs(run_dir, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()  # when the run starts: the code it runs
    summary, config = reference_settings(reference_dir)
    reference_workdir = os.path.join(reference_dir, "run")
    budget = args.budget_seconds or summary["budget_seconds"]
    clock = args.clock or summary.get("clock", "wall")
    torch.set_num_threads(args.threads)
    prepare_start = time.perf_counter()
    blocks, tokenizer = training_blocks(config, reference_workdir)
    vocabulary, model_fields = hf_vocabulary(tokenizer), hf_model_config(config, tokenizer)
    settings = training_settings(summary, config)
    prepare_seconds = time.perf_counter() - prepare_start
    load_start = os.getloadavg()
    calibration = calibrate(blocks, vocabulary, model_fields, settings, args.calibration_steps,
                            os.path.join(run_dir, "calibration"))
    rate = calibration[f"steps_per_{clock}_second"]
    num_steps = max(args.points, int(rate * budget * 0.97))
    save_every = max(1, num_steps // args.points)
    print(f"{corpus}/{MODEL}: {len(blocks)} blocks of {blocks.shape[1]}; {rate:.3f} steps per {clock} second in "
          f"calibration -> {num_steps} steps for {budget:.0f} {clock} seconds", flush=True)
    hf_run = os.path.join(run_dir, "trainer")
    points = train(blocks, vocabulary, model_fields, max_steps=num_steps, save_every=save_every,
                   record_every=save_every, output_dir=hf_run, settings=settings)
    start, first_step = points[0], points[1]
    times = {p["step"]: p for p in relative(points)}
    masking = summary.get("eval_masking", {"mask_rate": 0.15, "max_predictions_per_seq": 20, "kind": "token"})
    scored = score(hf_run, reference_workdir, run_dir, masking)
    from transformers import BertConfig, BertForMaskedLM
    parameters = BertForMaskedLM(BertConfig(**model_fields)).num_parameters()
    result = {
        "system": f"transformers {transformers.__version__} Trainer, torch {torch.__version__}", "model": MODEL,
        "corpus": corpus, "corpus_path": summary.get("corpus_path"), "size": summary.get("size"), "clock": clock,
        "budget_seconds": budget, "num_train_steps": num_steps, "checkpoint_every": save_every,
        "calibration": calibration, "first_step_seconds": first_step["wall"] - start["wall"],
        "final_wall_seconds": times[num_steps]["wall_seconds"], "final_cpu_seconds": times[num_steps]["cpu_seconds"],
        "parameters": parameters, "threads": args.threads, "training": settings, "model_config": model_fields,
        "data": {"blocks": len(blocks), "block_size": int(blocks.shape[1]), "tokens": int(blocks.size),
                 "lines_per_group": LINES_PER_GROUP, "prepare_seconds": prepare_seconds},
        "reference": reference_dir, "eval_masking": masking,
        "eval_segment_ids": "all 0 (trained without segments); mlm_accuracy_with_segments: the rows' own",
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "command": sys.argv,
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_run(run_dir, result, times, scored)
    print(f"{corpus}/{MODEL}: {num_steps} steps in {times[num_steps]['wall_seconds']:.0f} wall s "
          f"({times[num_steps]['cpu_seconds']:.0f} CPU s), held-out MLM accuracy (15% masking) "
          f"{scored[-1]['mlm_accuracy']:.4f} (with segment ids {scored[-1]['mlm_accuracy_with_segments']:.4f})",
          flush=True)


def write_run(run_dir: str, result: dict, times: dict[int, dict], scored: list[dict]) -> None:
    """run.json, and curve.jsonl: per scored checkpoint its clocks and scores (report.py's interface)."""
    atomic.write_json(os.path.join(run_dir, "run.json"), result, indent=1)
    with atomic.writer(os.path.join(run_dir, "curve.jsonl")) as f:
        for row in scored:
            clocks = {key: times[row["step"]][key] for key in ("wall_seconds", "cpu_seconds")}
            scores = {key: value for key, value in row.items() if key not in ("step", "masking")}
            f.write(json.dumps({"step": row["step"], **clocks, **scores}) + "\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder run_ttq.py wrote (DIR/<corpus>/<model>)")
    parser.add_argument("--corpora", default="default", help="comma-separated corpus names (as run_ttq.py's, "
                        "paths after ':' are ignored: the reference run has them)")
    parser.add_argument("--reference", default="bert2018", help="the bert_jax run whose data, tokenizer, model "
                        "size, budget, optimisation settings and held-out set are used")
    parser.add_argument("--budget_seconds", type=float, default=0.0, help="0: the reference's")
    parser.add_argument("--clock", default="", choices=("", "wall", "cpu"), help="empty: the reference's")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (JAX uses the 2 cores)")
    parser.add_argument("--points", type=int, default=16, help="checkpoints (evaluation points) per run")
    parser.add_argument("--calibration_steps", type=int, default=50)
    parser.add_argument("--dry_run", action="store_true",
                        help="4 points, 10 calibration steps (with run_ttq.py --dry_run's 20 s budget)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.points, args.calibration_steps = 4, 10
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)
    try:
        import accelerate  # noqa: F401  (Trainer needs it; transformers does not install it)
    except ImportError:
        raise SystemExit("error: transformers' Trainer needs accelerate: pip install -e '.[bench]' (accelerate>=1.1).") from None
    for entry in args.corpora.split(","):
        run_corpus(args, entry.partition(":")[0])


if __name__ == "__main__":
    main()
