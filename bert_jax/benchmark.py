"""Benchmark the train step: python -m bert_jax.benchmark --config=configs/bert_mini.py --batch_size=32 --seq_len=128.

Compiles the real train step for a global batch of `--batch_size` sequences of `--seq_len` tokens on a
mesh over all devices, times `--steps` steps after `--warmup_steps`, and prints compile time, step
time, throughput, model FLOPs, achieved FLOP/s, MFU and peak memory. `--input_pipeline` also times the
host input pipeline on the corpus of the config (the embedded default if none); `--baseline=hf_torch`
(or `hf_flax`, in an environment with transformers 4.57.6) times Hugging Face's BertForPreTraining at the
same sizes in the same run. The last line printed is one JSON object with every figure. Config
overrides work as in training (`--config.model.dtype=bfloat16`). What is measured, and how, is in
`bert_jax.tools.benchmarking`. Only flag wiring and printing live here.
"""

import json
import os
import sys
import tempfile

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax import cli, hardware
from bert_jax import config as config_lib
from bert_jax.runtime import reporting
from bert_jax.tools import benchmarking

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
_TEACHER_CONFIG = config_flags.DEFINE_config_file(
    "teacher_config", None, "For a distillation config (configs/distill/*.py): a pretraining config with the "
    "teacher's shape (its weights are random; its forward pass is timed and counted in the FLOPs).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch size (sequences per step, all devices).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", None, "Tokens per sequence (sets config.data.max_seq_length).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 3, "Untimed steps after compilation, before timing.")
_PADDING_FRACTION = flags.DEFINE_float("padding_fraction", 0.0,
                                       "Fraction of each synthetic sequence that is padding (attention mask 0).")
_INPUT_PIPELINE = flags.DEFINE_bool("input_pipeline", False,
                                    "Also time the host input pipeline (builds corpus and tokenizer in --workdir).")
_PIPELINE_SECONDS = flags.DEFINE_float("pipeline_seconds", 5.0, "Seconds to time each pipeline setting.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where --input_pipeline builds its corpus (default: a temp dir).")
_BASELINE = flags.DEFINE_enum("baseline", "none", benchmarking.BASELINES,
                              "Also time HF's BertForPreTraining: hf_torch (PyTorch) or hf_flax (transformers 4.x).")
_XLA_FLAG_SETS = flags.DEFINE_list("xla_flag_sets", [],
                                   f"Named XLA flag sets to turn on, comma-separated: {sorted(benchmarking.XLA_FLAG_SETS)}.")
_APPEND_TO = flags.DEFINE_string("append_to", None,
                                 "Also append the JSON result as one line to this file (for benchmark_report).")
flags.mark_flags_as_required(["config", "batch_size", "seq_len"])


def _rate(flops_per_second: float, platform: str) -> str:
    if platform == "cpu":
        return f"{flops_per_second / 1e9:,.1f} GFLOP/s"
    return f"{flops_per_second / 1e12:,.1f} TFLOP/s"


def _mfu(figures: dict, platform: str, device_kind: str) -> str:
    if figures["mfu"] is not None:
        return f"MFU {100 * figures['mfu']:.1f}%"
    if platform == "cpu":
        return "no MFU on CPU"
    return f"MFU unknown: no peak for device kind {device_kind!r} (add it to benchmarking.PEAK_TFLOPS)"


def _print_timing(figures: dict, platform: str, steps: int, warmup_steps: int) -> None:
    print(f"  {'step time median / p90':<30}{figures['step_time_median_s'] * 1e3:,.1f} / "
          f"{figures['step_time_p90_s'] * 1e3:,.1f} ms  ({steps} steps after {warmup_steps} warm-up)")
    print(f"  {'throughput':<30}{figures['sequences_per_second']:,.1f} seq/s, "
          f"{figures['tokens_per_second']:,.0f} tokens/s")


def _print_device(result: dict) -> None:
    platform = result["platform"]
    print(f"{result['config']}: global batch {result['batch_size']} x {result['seq_len']} tokens, "
          f"{result['dtype']}, {result['num_devices']} x {result['device_kind']} ({platform})")
    print(f"  {'switches':<30}" + ", ".join(f"{k.split('.')[1]}={v}" for k, v in result["switches"].items())
          + (f"; XLA flag sets: {result['xla_flag_sets']}" if result["xla_flag_sets"] else ""))
    print(f"  {'compile (lower + compile)':<30}{result['compile_seconds']:.2f} s")
    _print_timing(result, platform, result["steps"], result["warmup_steps"])
    if result["switches"].get("data.pack_sequences"):
        print(f"  {'packed instances':<30}{result['instances_per_second']:,.1f} instances/s (rows of "
              f"max_instances_per_pack synthetic pairs)")
    print(f"  {'model FLOPs / step':<30}{result['model_flops_per_step'] / 1e9:,.2f} GFLOP  "
          f"(model_stats.training_flops_per_token x batch x seq)")
    print(f"  {'achieved':<30}{_rate(result['achieved_tflops'] * 1e12, platform)}, "
          f"{_mfu(result, platform, result['device_kind'])}")
    source = "host peak RSS" if result["memory_source"] == "host_peak_rss" else "device peak bytes in use"
    print(f"  {'peak memory':<30}{result['peak_memory_bytes'] / 2**30:.2f} GiB ({source})")


def _print_pipeline(result: dict) -> None:
    print(f"input pipeline (host, this process's {result['batch_size'] // jax.process_count()} x "
          f"{result['seq_len']} per step, {result['pipeline_seconds']:g} s each):")
    print(f"  {'in process (num_workers=0)':<30}{result['pipeline_sequences_per_second_in_process']:,.1f} seq/s")
    print(f"  {str(result['pipeline_num_workers']) + ' Grain workers':<30}"
          f"{result['pipeline_sequences_per_second_workers']:,.1f} seq/s")
    ratio = result["pipeline_over_device"]
    verdict = "keeps up with the device" if ratio >= 1 else "is the BOTTLENECK: use more workers or hosts"
    print(f"  {'best pipeline / device rate':<30}{ratio:.2f}x (the pipeline {verdict})")


def _print_baseline(result: dict) -> None:
    platform = "cpu" if result["baseline_device_kind"] == "cpu" else "accelerator"  # GFLOP/s or TFLOP/s
    print(f"baseline {result['baseline']}: HF BertForPreTraining, same sizes and batch, "
          f"{result['baseline_dtype']}, 1 x {result['baseline_device_kind']}")
    if "baseline_compile_seconds" in result:
        print(f"  {'compile (lower + compile)':<30}{result['baseline_compile_seconds']:.2f} s")
    else:
        print(f"  {'first step':<30}{result['baseline_first_step_seconds']:.2f} s")
    figures = {key[len("baseline_"):]: value for key, value in result.items() if key.startswith("baseline_")}
    _print_timing(figures, platform, result["steps"], result["warmup_steps"])
    print(f"  {'achieved (our FLOPs count)':<30}{_rate(figures['achieved_tflops'] * 1e12, platform)}, "
          f"{_mfu(figures, platform, figures['device_kind'])}")
    print(f"  {'':<30}(HF projects every position onto the vocabulary: it really does "
          f"{figures['hf_all_positions_flops_per_step'] / result['model_flops_per_step']:.2f}x our model FLOPs)")
    if result["num_devices"] > 1:
        print(f"  note: ours ran on {result['num_devices']} devices, the baseline on one")
    print(f"  {'ours / baseline throughput':<30}{result['ours_over_baseline']:.2f}x")


def _measure_pipeline(config, result: dict) -> dict:
    workers = config.data.num_workers if config.data.num_workers > 0 else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as scratch:
        figures = benchmarking.measure_input_pipeline(config, _WORKDIR.value or scratch,
                                                      seconds=_PIPELINE_SECONDS.value, num_workers=workers)
    best = max(figures["pipeline_sequences_per_second_in_process"], figures["pipeline_sequences_per_second_workers"])
    per_process_device_rate = result["sequences_per_second"] / jax.process_count()
    return {**figures, "pipeline_over_device": best / per_process_device_rate}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    reporting.quiet_library_logs()
    baseline = _BASELINE.value
    try:
        extra_xla_flags = benchmarking.xla_flags(_XLA_FLAG_SETS.value)
        if extra_xla_flags:  # before anything starts the backend, which reads XLA_FLAGS once
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {extra_xla_flags}".strip()
        config = benchmarking.prepare_config(_CONFIG.value, _BATCH_SIZE.value, _SEQ_LEN.value, _TEACHER_CONFIG.value)
        if baseline != "none":  # fail before minutes of work, not after
            benchmarking.check_baseline(config, baseline)
        result = {"config": flags.FLAGS["config"].config_filename, **benchmarking.benchmark_train_step(
            config, steps=_STEPS.value, warmup_steps=_WARMUP_STEPS.value, padding_fraction=_PADDING_FRACTION.value)}
        result.update(xla_flag_sets=",".join(_XLA_FLAG_SETS.value), xla_flags=os.environ.get("XLA_FLAGS", ""),
                      switches=benchmarking.switches(config), jax_version=jax.__version__,
                      matmul_dtype=hardware.resolve_matmul_dtype(config.model.matmul_dtype),
                      glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))
        _print_device(result)
        if _INPUT_PIPELINE.value:
            result.update(_measure_pipeline(config, result))
            _print_pipeline(result)
        if baseline != "none":
            run = benchmarking.hf_torch_baseline if baseline == "hf_torch" else benchmarking.hf_flax_baseline
            host_batch = benchmarking.synthetic_batch(config.train.global_batch_size, config.data.max_seq_length,
                                                      config.data.tokenizer_vocab_size,
                                                      padding_fraction=_PADDING_FRACTION.value, seed=config.train.seed)
            result.update(run(config, host_batch, steps=_STEPS.value, warmup_steps=_WARMUP_STEPS.value))
            result["ours_over_baseline"] = result["sequences_per_second"] / result["baseline_sequences_per_second"]
            _print_baseline(result)
    except (config_lib.InputError, benchmarking.BaselineUnavailable) as e:
        sys.exit(f"error: {e}")
    if result["platform"] == "cpu" and "hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
        logging.warning("tip: on CPU, GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (set before Python starts) makes "
                        "XLA steps ~1.3x faster")
    if _APPEND_TO.value:
        with open(_APPEND_TO.value, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run_app(main, huge_pages=True)
