#!/usr/bin/env bash
# Each speed switch on its own, on this CPU: bert_mini, batch 32 x 128, float32, against the defaults in
# the same sweep. One JSON line per run in $OUT_FILE, then the table. benchmarks/cpu_levers.py times the
# in-process levers (bf16 matmuls, fused QKV, dropout PRNG) interleaved in one process, which cancels drift.
#
#   benchmarks/cpu_switches.sh [OUT_FILE] [--dry_run]
set -euo pipefail
cd "$(dirname "$0")/.."

out="benchmarks/results/cpu-$(date +%Y%m%d).jsonl" dry_run=0
for arg in "$@"; do
  if [[ "$arg" == "--dry_run" ]]; then dry_run=1; else out="$arg"; fi
done
mkdir -p "$(dirname "$out")"

bench() {
  local cmd=(python -m bert_jax.benchmark --config=configs/bert_mini.py --batch_size=32 --seq_len=128 "$@"
             --steps=8 --warmup_steps=2 "--append_to=$out")
  echo "+ ${cmd[*]}"
  if [[ $dry_run -eq 0 ]]; then "${cmd[@]}" 2>/dev/null | tail -n 1 >/dev/null; fi
}

nodrop="--config.model.attention_probs_dropout_prob=0.0"
bench
bench "$nodrop"
bench "$nodrop" --config.model.attention_impl=dot_product
bench --config.model.vocab_pad_multiple=0
bench --config.model.gather_masked_positions=false
bench --config.train.donate_state=false
bench --config.model.scan_layers=true
bench --config.model.remat_policy=full
bench --config.model.scan_layers=true --config.model.remat_policy=dots_with_no_batch_dims_saveable
bench --config.data.pack_sequences=true
bench --config.model.matmul_dtype=bfloat16
bench --config.model.fused_qkv=true
bench --config.train.dropout_prng=rbg
bench --config.train.dropout_prng=unsafe_rbg
bench --xla_flag_sets=cpu_xnnpack
bench --xla_flag_sets=cpu_onednn
bench --xla_flag_sets=cpu_vector_512
BERT_JAX_NO_REEXEC=1 bench  # glibc's default malloc (the commands restart with huge pages otherwise)

if [[ $dry_run -eq 0 ]]; then python -m bert_jax.benchmark_report "$out"; fi
