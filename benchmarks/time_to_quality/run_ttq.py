"""Time to quality: BERT-2018 against the modern encoder block at one wall-clock budget, same size, corpus,
tokenizer and held-out masking. Issue 20 point 6.

    python benchmarks/time_to_quality/run_ttq.py --out DIR [--budget_seconds 480] [--clock wall|cpu]
        [--size mini] [--corpora default,man:/path/man_prose.txt] [--models bert2018,modern] [--points 16]
        [--dry_run]

For every corpus, and every model on it (in this order, one at a time):
  1. a calibration run (`--calibration_steps` steps) of the real command, `python -m bert_jax.pretrain`, whose
     log gives the compile time of the first step and the steps per second (wall, and per CPU second of the
     process) after it; the first calibration on
     a corpus trains the SentencePiece tokenizer (as the default pipeline does) and every later run on that
     corpus is given the same file (config.data.tokenizer_model);
  2. the timed run: num_train_steps = steps/s x budget x 0.97 (slack for the checkpoint saves; per wall or
     per CPU second as --clock says), so the
     learning-rate schedule (BERT's linear decay; the modern side's warmup-stable-decay) ends at the budget;
     a checkpoint every num_train_steps / points steps, one in-run evaluation at the end only (so evaluation
     time is not in the budget);
  3. every checkpoint scored on the run's held-out split under ONE masking for all models (15% token
     masking, at most 20 predictions, 80/10/10; eval_checkpoints.py), since the modern side trains with 30%.

Wall time of a checkpoint = the absl timestamp of the train log line the run writes at that step, minus the
timestamp of the line saying the first (compiling) step finished: seconds of training after compilation,
checkpoint saves included, data preparation and the compile excluded (the compile time is reported apart).
CPU seconds of a checkpoint = the process's user + system time (all threads, /proc/<pid>/stat) sampled when
that line is read, minus the same at the first-step line. On a machine shared with other jobs the wall clock
stretches with their load and a calibration no longer predicts the run; the CPU clock hardly does, so
`--clock=cpu` (budget in CPU seconds; 2 cores busy = 2 CPU seconds per second) keeps the step counts right
there. Both clocks are recorded either way.

Writes, per corpus C and model M, DIR/C/M/run.json (settings, calibration, timings, parameter count, the
overrides given and any this checkout does not have yet) and DIR/C/M/curve.jsonl (one line per checkpoint:
step, wall_seconds, mlm_accuracy, mlm_loss, mlm_predictions, num_examples). Those two files are the interface of report.py:
another trainer (e.g. an HF Trainer run, issue 21) is compared by writing the same two files.
A model whose curve.jsonl exists is skipped (re-run to finish an interrupted sweep); any other run directory
is started afresh.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys

from bert_jax import config as config_lib
from bert_jax.runtime import atomic

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SIZES = {"mini": "configs/bert_mini.py", "tiny": "configs/bert_tiny.py"}
BASE_MASKING = {"mask_rate": 0.15, "max_predictions_per_seq": 20}  # BERT's, and the held-out masking of all
MODERN_MASK_RATE = 0.3
LOG_TIME = re.compile(r"^[IWEF](\d{4}) (\d{2}):(\d{2}):(\d{2})\.(\d{6}) ")
FIRST_STEP = re.compile(r"compiled and ran the first train step in ([\d.]+)s")
TRAIN_LINE = re.compile(r"\] step (\d+)/(\d+) \|")
PARAMETERS = re.compile(r"initialised ([\d,]+) parameters")


def model_overrides(model: str, size_config, *, num_steps: int, decay_fraction: float) -> dict[str, object]:
    """The --config overrides that make `model` out of the size config: none for 'bert2018' (the default
    post-LN, learned positions, GELU, 15% token masking, linear warmup/decay), ModernBERT's block, masking
    and schedule for 'modern', and for 'bert2018_fast' BERT-2018 with the README's two CPU speed switches:
    bf16 matmul operands where the hardware has them (model.matmul_dtype=auto) and packed rows."""
    if model == "bert2018":
        return {}
    if model == "bert2018_fast":
        return {"model.matmul_dtype": "auto", "data.pack_sequences": True}
    if model != "modern":
        raise SystemExit(f"error: unknown model {model!r}; give bert2018, bert2018_fast and/or modern.")
    scale = MODERN_MASK_RATE / BASE_MASKING["mask_rate"]
    return {
        "model.norm_placement": "pre", "model.final_norm": True, "model.ffn_activation": "geglu",
        # A gated FFN has 3 matrices where BERT's has 2: 2/3 of the width keeps the parameter count (rounded
        # to a multiple of 8 for the matmul kernels: 1024 -> 680, 512 -> 344).
        "model.intermediate_size": 8 * round(size_config.model.intermediate_size * 2 / 3 / 8),
        "model.position_encoding": "rotary", "model.use_bias": False,
        "masking.mask_rate": MODERN_MASK_RATE,
        "masking.max_predictions_per_seq": math.ceil(BASE_MASKING["max_predictions_per_seq"] * scale),
        "train.schedule": "wsd", "train.decay_shape": "1-sqrt",
        "train.decay_steps": max(1, round(decay_fraction * num_steps)), "train.optimizer": "stable_adamw",
    }


# An override that only makes sense with another one: dropped together when the other is missing.
_DEPENDS_ON = {"model.intermediate_size": "model.ffn_activation", "train.decay_steps": "train.schedule",
               "train.decay_shape": "train.schedule"}


def available(overrides: dict[str, object]) -> tuple[dict[str, object], list[str]]:
    """(the overrides this checkout's config has, the names it lacks): a field another helper has not
    landed yet is left out and reported, instead of failing the sweep."""
    defaults = config_lib.default_config()

    def exists(name):
        node = defaults
        for part in name.split("."):
            if part not in node:
                return False
            node = node[part]
        return True

    missing = [name for name in overrides if not exists(name)]
    missing += [name for name, needed in _DEPENDS_ON.items() if name in overrides and needed in missing
                and name not in missing]
    return {k: v for k, v in overrides.items() if k not in missing}, missing


def common_overrides(args, *, num_steps: int, checkpoint_every: int, tokenizer: str,
                     corpus: str) -> dict[str, object]:
    """What both models share: vocabulary, batch, peak rate, warmup, step count, logging and checkpoints."""
    overrides = {
        "model.vocab_size": args.vocab_size, "data.tokenizer_vocab_size": args.vocab_size,
        "data.max_seq_length": 128, "data.eval_num_examples": args.eval_examples,
        "train.global_batch_size": args.batch_size, "train.learning_rate": args.learning_rate,
        "train.num_train_steps": num_steps, "train.warmup_steps": max(1, round(args.warmup_fraction * num_steps)),
        "train.log_every_steps": checkpoint_every, "train.eval_every_steps": num_steps,
        "checkpoint.every_steps": checkpoint_every, "checkpoint.max_to_keep": args.points + 2,
    }
    if corpus:  # empty: the embedded default corpus, as `pretrain --config=configs/bert_tiny.py` uses
        overrides["data.corpus"] = corpus
    if tokenizer:
        overrides["data.tokenizer_model"] = tokenizer
    return overrides


def log_seconds(line: str) -> float | None:
    """Seconds since the start of the year of an absl log line's timestamp (None for other lines)."""
    match = LOG_TIME.match(line)
    if not match:
        return None
    mmdd, hours, minutes, seconds, micros = match.groups()
    day = datetime.datetime(2000, int(mmdd[:2]), int(mmdd[2:]))  # a leap year: 29 Feb parses
    return ((day - datetime.datetime(2000, 1, 1)).days * 86400 + int(hours) * 3600 + int(minutes) * 60
            + int(seconds) + int(micros) / 1e6)


def parse_log(path: str) -> dict:
    """From a run's log: first-step seconds, parameter count, and for every train log line the step, the wall
    seconds after the first step, and (from the .cpu file `pretrain` writes beside the log) the process's
    CPU seconds after the first step."""
    first_step_end, first_step_seconds, parameters, points = None, None, None, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            seconds = log_seconds(line)
            if seconds is None:
                continue
            if first_step_end is not None and seconds < first_step_end - 86400 * 180:
                seconds += 366 * 86400  # the run crossed New Year
            if (match := PARAMETERS.search(line)):
                parameters = int(match.group(1).replace(",", ""))
            elif (match := FIRST_STEP.search(line)):
                first_step_end, first_step_seconds = seconds, float(match.group(1))
            elif (match := TRAIN_LINE.search(line)) and first_step_end is not None:
                points.append({"step": int(match.group(1)), "wall_seconds": seconds - first_step_end})
    if first_step_end is None:
        raise SystemExit(f"error: {path} has no 'compiled and ran the first train step' line: the run failed "
                         "before training (see the log).")
    cpu = {}
    if os.path.exists(path + ".cpu"):
        with open(path + ".cpu", encoding="utf-8") as f:
            cpu = {int(step): float(seconds) for step, seconds in (line.split() for line in f if line.strip())}
    for point in points:
        point["cpu_seconds"] = cpu[point["step"]] - cpu[0] if point["step"] in cpu and 0 in cpu else None
    return {"first_step_seconds": first_step_seconds, "parameters": parameters, "train_lines": points}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def pretrain(workdir: str, size: str, overrides: dict[str, object], log_path: str) -> list[str]:
    """Runs `python -m bert_jax.pretrain` with the overrides in a fresh `workdir`; returns the command."""
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    command = [sys.executable, "-m", "bert_jax.pretrain", f"--config={SIZES[size]}", f"--workdir={workdir}"]
    command += [f"--config.{name}={value}" for name, value in overrides.items()]
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.hugetlb=1", PYTHONUNBUFFERED="1")
    # The log is read as it is written, so the process's CPU time can be sampled at each train line
    # (step 0: the line saying the first step finished). CPU time hardly depends on what else the shared
    # machine runs, wall time does.
    with open(log_path, "w", encoding="utf-8") as log, open(log_path + ".cpu", "w", encoding="utf-8") as cpu, \
            subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                             text=True, errors="replace") as process:
        for line in process.stdout:
            match = TRAIN_LINE.search(line)
            if match or FIRST_STEP.search(line):
                cpu.write(f"{match.group(1) if match else 0} {process_cpu_seconds(process.pid):.2f}\n")
            log.write(line)
        returncode = process.wait()
    if returncode:
        raise SystemExit(f"error: {' '.join(command)} failed with exit code {returncode}; see {log_path}.")
    return command


def calibrate(args, size_config, corpus: str, tokenizer: str, model: str, run_dir: str) -> dict:
    """Steps per second after the first step, and the first step's seconds, from a short run."""
    steps = args.calibration_steps
    overrides = common_overrides(args, num_steps=steps, checkpoint_every=max(1, steps // 5),
                                 tokenizer=tokenizer, corpus=corpus)
    overrides["checkpoint.every_steps"] = steps  # one save, at the end: outside the timed lines
    overrides.update(available(model_overrides(model, size_config, num_steps=steps,
                                               decay_fraction=args.decay_fraction))[0])
    workdir = os.path.join(run_dir, "calibration")
    pretrain(workdir, args.size, overrides, workdir + ".log")
    log = parse_log(workdir + ".log")
    first, last = log["train_lines"][0], log["train_lines"][-1]
    calibration = {"steps": steps, "first_step_seconds": log["first_step_seconds"], "workdir": workdir}
    for clock in ("wall", "cpu"):  # steps per wall second / per CPU second, after the first logged interval
        seconds = last[f"{clock}_seconds"] - first[f"{clock}_seconds"]
        calibration[f"steps_per_{clock}_second"] = (last["step"] - first["step"]) / max(seconds, 1e-9)
    return calibration


def run_model(args, size_config, corpus_name: str, corpus: str, model: str) -> None:
    """Calibration, the timed run, the fixed-masking evaluation of its checkpoints; writes run.json and
    curve.jsonl under DIR/<corpus>/<model>."""
    run_dir = os.path.join(args.out, corpus_name, model)
    if os.path.exists(os.path.join(run_dir, "curve.jsonl")):
        print(f"{corpus_name}/{model}: done already (curve.jsonl exists), skipped", flush=True)
        return
    os.makedirs(run_dir, exist_ok=True)
    tokenizer_path = os.path.join(args.out, corpus_name, "spm.model")
    tokenizer = tokenizer_path if os.path.exists(tokenizer_path) else ""
    load_start = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()  # when the run starts: the code it runs
    calibration = calibrate(args, size_config, corpus, tokenizer, model, run_dir)
    if not tokenizer:  # this calibration trained the corpus's tokenizer: every later run gets the same file
        shutil.copy(os.path.join(calibration["workdir"], "tokenizer", "spm.model"), tokenizer_path)
        tokenizer = tokenizer_path
    rate = calibration[f"steps_per_{args.clock}_second"]
    num_steps = max(args.points, int(rate * args.budget_seconds * 0.97))
    checkpoint_every = max(1, num_steps // args.points)
    overrides = common_overrides(args, num_steps=num_steps, checkpoint_every=checkpoint_every,
                                 tokenizer=tokenizer, corpus=corpus)
    given, missing = available(model_overrides(model, size_config, num_steps=num_steps,
                                               decay_fraction=args.decay_fraction))
    overrides.update(given)
    if missing:
        print(f"{corpus_name}/{model}: this checkout has no {', '.join(missing)}; run without them", flush=True)
    print(f"{corpus_name}/{model}: {rate:.3f} steps per {args.clock} second in calibration -> "
          f"{num_steps} steps for {args.budget_seconds:.0f} {args.clock} seconds", flush=True)
    workdir = os.path.join(run_dir, "run")
    command = pretrain(workdir, args.size, overrides, workdir + ".log")
    log = parse_log(workdir + ".log")
    scored = score_checkpoints(workdir, run_dir)
    at_step = {point["step"]: point for point in log["train_lines"]}
    summary = {
        "system": "bert_jax", "model": model, "corpus": corpus_name, "corpus_path": corpus or "(default)",
        "size": args.size, "clock": args.clock, "budget_seconds": args.budget_seconds, "num_train_steps": num_steps,
        "checkpoint_every": checkpoint_every, "calibration": calibration,
        "first_step_seconds": log["first_step_seconds"], "final_wall_seconds": at_step[num_steps]["wall_seconds"],
        "final_cpu_seconds": at_step[num_steps]["cpu_seconds"],
        "parameters": log["parameters"], "overrides": overrides, "not_in_checkout": missing,
        "eval_masking": dict(BASE_MASKING, kind="token"), "in_run_final_eval": last_eval_row(workdir),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "command": command,
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    atomic.write_json(os.path.join(run_dir, "run.json"), summary, indent=1)
    with atomic.writer(os.path.join(run_dir, "curve.jsonl")) as f:  # its existence marks the model done
        f.writelines(json.dumps({"step": row["step"], "wall_seconds": at_step[row["step"]]["wall_seconds"],
                                 "cpu_seconds": at_step[row["step"]]["cpu_seconds"], "mlm_accuracy": row["mlm_accuracy"], "mlm_loss": row["mlm_loss"],
                                 "mlm_predictions": row["mlm_predictions"], "num_examples": row["num_examples"]})
                     + "\n" for row in scored)
    print(f"{corpus_name}/{model}: {num_steps} steps in {at_step[num_steps]['wall_seconds']:.0f} wall s "
          f"({at_step[num_steps]['cpu_seconds']:.0f} CPU s), held-out MLM accuracy "
          f"(15% masking) {scored[-1]['mlm_accuracy']:.4f}", flush=True)


def score_checkpoints(workdir: str, run_dir: str) -> list[dict]:
    """eval_checkpoints.py on every checkpoint of `workdir` at the common held-out masking."""
    eval_path = os.path.join(run_dir, "heldout_fixed_masking.jsonl")
    with open(os.path.join(run_dir, "eval.log"), "w", encoding="utf-8") as log:
        subprocess.check_call([sys.executable, os.path.join(HERE, "eval_checkpoints.py"), f"--workdir={workdir}",
                               f"--out={eval_path}", f"--mask_rate={BASE_MASKING['mask_rate']}",
                               f"--max_predictions_per_seq={BASE_MASKING['max_predictions_per_seq']}",
                               "--kind=token"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    with open(eval_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def last_eval_row(workdir: str) -> dict:
    """The run's own final evaluation (at ITS masking): for BERT it must equal the fixed-masking score."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {k: v for k, v in [r for r in rows if r["split"] == "eval"][-1].items() if k != "split"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--budget_seconds", type=float, default=480.0, help="training seconds per run")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="what the budget counts: wall seconds, or the process's CPU seconds (all threads), "
                             "which hardly depend on what else a shared machine runs")
    parser.add_argument("--size", default="mini", choices=sorted(SIZES))
    parser.add_argument("--corpora", default="default",
                        help="comma-separated NAME:PATH entries; 'default' = the embedded stdlib docstrings")
    parser.add_argument("--models", default="bert2018,modern", help="bert2018, modern, bert2018_fast")
    parser.add_argument("--points", type=int, default=16, help="checkpoints (evaluation points) per run")
    parser.add_argument("--calibration_steps", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_fraction", type=float, default=0.1)
    parser.add_argument("--decay_fraction", type=float, default=0.2, help="of the steps, the modern side's decay")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--eval_examples", type=int, default=512,
                        help="held-out instances (at most what the held-out text gives)")
    parser.add_argument("--dry_run", action="store_true",
                        help="bert_tiny, 20 s, 4 points, 10 calibration steps: checks the pipeline end to end")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.size, args.budget_seconds, args.points, args.calibration_steps = "tiny", 20.0, 4, 10
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)
    spec = importlib.util.spec_from_file_location("size_config", os.path.join(REPO, SIZES[args.size]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    size_config = module.get_config()
    for entry in args.corpora.split(","):
        name, _, path = entry.partition(":")
        for model in args.models.split(","):
            run_model(args, size_config, name, os.path.abspath(path) if path else "", model)


if __name__ == "__main__":
    main()
