#!/usr/bin/env bash
# Pretrain on every accelerator of one machine (GPUs or a single-host TPU VM): jit shards the global
# batch over all local devices, so one process is enough.
#
#   launch/single_host.sh CONFIG WORKDIR [extra pretrain flags...] [--dry_run]
#
# Example: launch/single_host.sh configs/bert_base.py /data/runs/base --config.data.corpus=/data/text
set -euo pipefail

dry_run=0
args=()
for arg in "$@"; do
  if [[ "$arg" == "--dry_run" ]]; then dry_run=1; else args+=("$arg"); fi
done
if [[ ${#args[@]} -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [extra pretrain flags...] [--dry_run]" >&2
  exit 2
fi
config="${args[0]}"
workdir="${args[1]}"
extra=("${args[@]:2}")

# On GPUs, let XLA overlap communication with compute (the flag is unknown to CPU-only builds).
if command -v nvidia-smi >/dev/null 2>&1; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
fi
cmd=(python -m bert_jax.pretrain "--config=${config}" "--workdir=${workdir}" "${extra[@]}")

echo "will run: XLA_FLAGS='${XLA_FLAGS:-}' ${cmd[*]}"
echo "logs: ${workdir}/pretrain.log; metrics: ${workdir}/metrics.jsonl; TensorBoard: ${workdir}/tensorboard"
if [[ $dry_run -eq 1 ]]; then
  exit 0
fi
mkdir -p "${workdir}"
"${cmd[@]}" 2>&1 | tee -a "${workdir}/pretrain.log"
