"""The CPU speed levers side by side in one process: each variant compiled once, timed in interleaved rounds
(A, B, C, ..., A, B, C, ...) so that drift hits every variant alike, and its losses over the first steps from
one initial state (the float32 agreement of model.matmul_dtype='bfloat16').

    python benchmarks/cpu_levers.py --config=configs/bert_mini.py --batch_size=32 --seq_len=128 \
        [--rounds=3 --steps_per_round=4 --loss_steps=4] [--variants=defaults,bf16,...] [--out=FILE.json]

Variants (each the defaults plus): bf16 (model.matmul_dtype=bfloat16), fused_qkv, rbg and unsafe_rbg
(train.dropout_prng), all (bf16 + fused_qkv + unsafe_rbg). Process-wide levers (huge pages, XLA flags) need
processes of their own: python -m bert_jax.benchmark with BERT_JAX_NO_REEXEC=1 or --xla_flag_sets.
"""

import json
import os

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from bert_jax import cli, hardware
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import atomic, parallel
from bert_jax.tools import benchmarking

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds.")
_STEPS_PER_ROUND = flags.DEFINE_integer("steps_per_round", 4, "Timed steps per variant per round.")
_LOSS_STEPS = flags.DEFINE_integer("loss_steps", 4, "Steps from the initial state whose losses are compared.")
_VARIANTS = flags.DEFINE_list("variants", ["defaults", "bf16", "fused_qkv", "rbg", "unsafe_rbg", "all"], "Variants.")
_OUT = flags.DEFINE_string("out", None, "Also write the results as JSON here.")

VARIANTS = {
    "defaults": {},
    "bf16": {"model.matmul_dtype": "bfloat16"},
    "fused_qkv": {"model.fused_qkv": True},
    "rbg": {"train.dropout_prng": "rbg"},
    "unsafe_rbg": {"train.dropout_prng": "unsafe_rbg"},
    "all": {"model.matmul_dtype": "bfloat16", "model.fused_qkv": True, "train.dropout_prng": "unsafe_rbg"},
}


def _config(base, overrides):
    config = base.copy_and_resolve_references()
    for path, value in overrides.items():
        group, name = path.split(".")
        config[group][name] = value
    return benchmarking.prepare_config(config, _BATCH_SIZE.value, _SEQ_LEN.value)


def main(argv):
    cli.refuse_extra_arguments(argv)
    mesh = parallel.make_mesh(_CONFIG.value.mesh)
    runs, initial = {}, None
    for name in _VARIANTS.value:
        config = _config(_CONFIG.value, VARIANTS[name])
        setup, create = steps_lib.make_pretraining_setup(config, mesh)
        if initial is None:
            initial = jax.device_get(create())  # every variant starts from these parameters
        batch = parallel.to_global_batch(benchmarking.synthetic_batch(
            _BATCH_SIZE.value, _SEQ_LEN.value, config.data.tokenizer_vocab_size, seed=config.train.seed),
            parallel.batch_sharding(mesh))
        state = jax.device_put(initial, setup.state_sharding)
        step = steps_lib.make_train_step(setup, mesh, config.train).lower(state, batch).compile()
        losses = []
        for _ in range(_LOSS_STEPS.value):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        runs[name] = {"step": step, "state": state, "batch": batch, "losses": losses, "times": []}
        print(f"{name}: compiled; losses {losses}", flush=True)
    for _ in range(_ROUNDS.value):
        for name, run in runs.items():
            def run_step(run=run):
                run["state"], metrics = run["step"](run["state"], run["batch"])
                jax.block_until_ready((run["state"], metrics))
            run["times"] += benchmarking.time_steps(run_step, _STEPS_PER_ROUND.value, 1)
    reference = runs[_VARIANTS.value[0]]
    results = {"config": flags.FLAGS["config"].config_filename, "batch_size": _BATCH_SIZE.value,
               "seq_len": _SEQ_LEN.value, "jax_version": jax.__version__,
               "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "bf16_resolves_auto_to": hardware.resolve_matmul_dtype("auto"), "variants": {}}
    for name, run in runs.items():
        median = float(np.median(run["times"]))
        loss_rel = np.abs(np.asarray(run["losses"]) / np.asarray(reference["losses"]) - 1).max()
        results["variants"][name] = {
            "overrides": VARIANTS[name], "step_median_s": median, "step_p90_s": float(np.percentile(run["times"], 90)),
            "speedup": float(np.median(reference["times"])) / median, "losses": run["losses"],
            "max_rel_loss_difference": float(loss_rel), "times": run["times"]}
        print(f"{name:12s} median {median * 1e3:8.1f} ms  x{results['variants'][name]['speedup']:.3f}  "
              f"losses {[f'{x:.5f}' for x in run['losses']]}  max rel diff {loss_rel:.2e}", flush=True)
    if _OUT.value:
        atomic.write_json(_OUT.value, results, indent=1)
    print(json.dumps({k: v for k, v in results.items() if k != "variants"}))


if __name__ == "__main__":
    cli.run_app(main, huge_pages=True)
