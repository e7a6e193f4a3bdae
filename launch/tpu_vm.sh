#!/usr/bin/env bash
# Cloud TPU VM lifecycle for bert_jax: one host (v4-8, v5litepod-8, ...) or a pod slice (v4-32, ...).
#
#   launch/tpu_vm.sh create  --name=NAME --zone=ZONE --accelerator_type=v4-32 [--version=...] [--spot]
#   launch/tpu_vm.sh install --name=NAME --zone=ZONE [--source=.]        copy this checkout to every worker, pip install
#   launch/tpu_vm.sh train   --name=NAME --zone=ZONE --config=configs/bert_base.py --workdir=/mnt/runs/base [-- extra pretrain flags]
#   launch/tpu_vm.sh logs    --name=NAME --zone=ZONE [--worker=0]       follow a worker's log
#   launch/tpu_vm.sh stop    --name=NAME --zone=ZONE                    stop training on every worker
#   launch/tpu_vm.sh delete  --name=NAME --zone=ZONE                    delete the TPU VM
#
# Every command accepts --project=P and --dry_run (print the gcloud commands, run nothing). Training
# runs the same command on all workers (--worker=all); on a pod JAX finds the other hosts itself.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
action="$1"; shift

name="" zone="" project="" accelerator_type="" version="tpu-ubuntu2204-base" spot=0 source_dir="."
config="" workdir="" worker="0" dry_run=0 extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator_type=*) accelerator_type="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --spot) spot=1 ;;
    --source=*) source_dir="${1#*=}" ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --worker=*) worker="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
  shift
done
[[ -n "$name" && -n "$zone" ]] || { echo "error: --name and --zone are required" >&2; exit 2; }

common=(--zone="$zone")
[[ -n "$project" ]] && common+=(--project="$project")

run() {
  echo "+ $(printf '%q ' "$@")"
  if [[ $dry_run -eq 0 ]]; then "$@"; fi
}

remote_dir="~/bert_jax"
log_file="~/bert_jax_pretrain.log"
case "$action" in
  create)
    [[ -n "$accelerator_type" ]] || { echo "error: create needs --accelerator_type (e.g. v4-8, v4-32)" >&2; exit 2; }
    flags=(--accelerator-type="$accelerator_type" --version="$version")
    [[ $spot -eq 1 ]] && flags+=(--spot)
    run gcloud compute tpus tpu-vm create "$name" "${common[@]}" "${flags[@]}"
    ;;
  install)
    run gcloud compute tpus tpu-vm scp --recurse "$source_dir" "$name:$remote_dir" --worker=all "${common[@]}"
    run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${common[@]}" \
      --command="cd $remote_dir && pip install -U 'jax[tpu]' && pip install -e ."
    ;;
  train)
    [[ -n "$config" && -n "$workdir" ]] || { echo "error: train needs --config and --workdir" >&2; exit 2; }
    cmd="cd $remote_dir && nohup python -m bert_jax.pretrain --config=$config --workdir=$workdir ${extra[*]:-}"
    run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${common[@]}" \
      --command="$cmd > $log_file 2>&1 &"
    ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "$name" --worker="$worker" "${common[@]}" --command="tail -n 200 -f $log_file"
    ;;
  stop)
    run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${common[@]}" --command="pkill -TERM -f bert_jax.pretrain || true"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet
    ;;
  *) echo "unknown command: $action" >&2; usage ;;
esac
