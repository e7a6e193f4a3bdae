#!/usr/bin/env bash
# The GPU benchmark of issue 6: bert_base at 128 and bert_large at 128 and 512, in bf16, each optimisation
# switch and XLA flag set on its own, against HF PyTorch in the same run. Results go to one JSON line per
# run in $OUT_FILE; the markdown table is printed at the end (python -m bert_jax.benchmark_report).
#
#   benchmarks/gpu_sweep.sh [OUT_FILE] [--dry_run]
#
# Needs a CUDA jax (pip install -U "jax[cuda12]") and the HF extra (pip install -e '.[hf]'). The hf_flax
# baseline needs transformers 4.57.6 in its own environment: HF_FLAX_PYTHON=/path/to/that/python.
set -euo pipefail
cd "$(dirname "$0")/.."

out="benchmarks/results/gpu-$(date +%Y%m%d).jsonl" dry_run=0
for arg in "$@"; do
  if [[ "$arg" == "--dry_run" ]]; then dry_run=1; else out="$arg"; fi
done
mkdir -p "$(dirname "$out")"

bench() {  # python [benchmark flags...]
  local python="$1"; shift
  local cmd=("$python" -m bert_jax.benchmark "$@" --steps=20 --warmup_steps=5 "--append_to=$out")
  echo "+ ${cmd[*]}"
  if [[ $dry_run -eq 0 ]]; then "${cmd[@]}" | tail -n 30; fi
}

# No attention dropout, so that every attention kernel runs the same model (ModernBERT/MosaicBERT do the same).
nodrop="--config.model.attention_probs_dropout_prob=0.0"
for shape in "bert_base 256 128" "bert_large 128 128" "bert_large 32 512"; do
  read -r name batch seq <<<"$shape"
  base=(--config="configs/${name}.py" --batch_size="$batch" --seq_len="$seq" --config.model.dtype=bfloat16)
  bench python "${base[@]}" --baseline=hf_torch
  if [[ -n "${HF_FLAX_PYTHON:-}" ]]; then bench "$HF_FLAX_PYTHON" "${base[@]}" --baseline=hf_flax; fi
  bench python "${base[@]}" "$nodrop"
  bench python "${base[@]}" "$nodrop" --config.model.attention_impl=dot_product
  bench python "${base[@]}" "$nodrop" --config.model.attention_impl=cudnn
  bench python "${base[@]}" --config.model.vocab_pad_multiple=0
  bench python "${base[@]}" --config.model.gather_masked_positions=false
  bench python "${base[@]}" --config.train.donate_state=false
  bench python "${base[@]}" --config.model.scan_layers=true
  bench python "${base[@]}" --config.model.scan_layers=true --config.model.remat_policy=dots_with_no_batch_dims_saveable
  bench python "${base[@]}" --config.model.remat_policy=full
  predictions=$(( ((seq - 3) * 15 + 50) / 100 )); (( predictions < 20 )) && predictions=20  # 15% of a full row, >= the recipes' 20
  bench python "${base[@]}" --config.data.pack_sequences=true --config.masking.max_predictions_per_seq="$predictions"
  for flags in latency_hiding no_command_buffers no_triton_gemm; do
    bench python "${base[@]}" --xla_flag_sets="$flags"
  done
done
bench python --config=configs/bert_base.py --batch_size=256 --seq_len=128 --config.model.dtype=float32

if [[ $dry_run -eq 0 ]]; then python -m bert_jax.benchmark_report "$out"; fi
