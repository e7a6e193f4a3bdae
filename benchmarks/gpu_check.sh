#!/usr/bin/env bash
# The GPU check of issue 21, as one command for the device machine (one H100/H200; its image has Python 3.12,
# jax 0.11 with CUDA 13, flax, optax, orbax, sentencepiece, absl-py, torch and transformers, but no grain,
# array-record or ml_collections, and no registry). From the repository root, with the wheels of
# benchmarks/download_wheels.sh carried in wheels/:
#
#   benchmarks/gpu_check.sh [--dry-run]          # or GPU_CHECK_DRY_RUN=1
#
# 1. installs wheels/*.whl with pip --no-index --no-deps into a temporary folder put on PYTHONPATH (never a
#    registry), and checks that bert_jax imports from this checkout (PYTHONPATH, no pip install -e);
# 2. runs `python -m bert_jax.benchmark_sweep` in ONE process (each process start and XLA compile costs
#    seconds): bert_base@128 batch 256 and packed bert_large@512 batch 32, bf16, cuDNN attention, each
#    against HF PyTorch (bf16 autocast, SDPA) with MFU, then a greedy search over attention_impl,
#    scan_layers and remat_policy; no case starts after GPU_CHECK_BUDGET_S (default 420) seconds from
#    the start of this script, so that it ends within 8 minutes;
# 3. writes gpu_check.jsonl (one JSON line per case), gpu_check.md (the table) and gpu_check.log to $OUT
#    when it is set, else to a new folder under /tmp.
#
# --dry-run: the same steps at bert_tiny sizes, a few steps, dot_product attention instead of cuDNN, on
# this machine's CPU, with the HF PyTorch baseline; without a wheels/ folder it skips the installation.
set -uo pipefail
start=$SECONDS
cd "$(dirname "$0")/.."
dry_run="${GPU_CHECK_DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run | --dry_run) dry_run=1 ;;
    *) echo "usage: benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
  esac
done
[[ "$dry_run" == 0 ]] || dry_run=1
budget_s="${GPU_CHECK_BUDGET_S:-420}"
out_dir="${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$out_dir"
export PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore
# JAX takes this share of the GPU up front; the rest is for the HF PyTorch baseline in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}"

# 1. The carried wheels, installed offline into a temporary folder.
site=""
wheels=(wheels/*.whl)
if [[ -e "${wheels[0]}" ]]; then
  site="$(mktemp -d /tmp/gpu_check_site.XXXXXX)"
  pip_install=(python3 -m pip install -q --no-index --find-links wheels --no-deps --no-compile --no-cache-dir
               --upgrade --target "$site")
  if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    "${pip_install[@]}" "${wheels[@]}" || { echo "error: installing wheels/ failed (see above)"; exit 1; }
    echo "installed into $site: $(cd wheels && ls ./*.whl | sed 's|^\./||' | tr '\n' ' ')"
  elif [[ "$dry_run" == 1 ]]; then  # the wheels are cp312: install them for 3.12 to check the set, import none
    "${pip_install[@]}" --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_28_x86_64 "${wheels[@]}" || { echo "error: installing wheels/ failed (see above)"; exit 1; }
    echo "dry run: installed wheels/ for Python 3.12 into $site to check them; this $(python3 -V) uses its own packages"
    site=""
  else
    echo "error: the wheels in wheels/ are for Python 3.12, and python3 here is $(python3 -V)"; exit 1
  fi
elif [[ "$dry_run" == 1 ]]; then
  echo "dry run: no wheels/ folder, skipping the wheel installation (this machine's packages are used)"
else
  echo "error: no wheels/*.whl; run benchmarks/download_wheels.sh where pip reaches a registry and carry wheels/"
  exit 1
fi
export PYTHONPATH="$PWD${site:+:$site}"
python3 -c '
import importlib.metadata as md, bert_jax, bert_jax.benchmark, bert_jax.benchmark_sweep
names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "ml_collections", "torch", "transformers")
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "missing"
print("bert_jax imports from", bert_jax.__file__, "|", ", ".join(f"{n} {version(n)}" for n in names))
' || { echo "error: bert_jax does not import (above); a package the image lacks must travel in wheels/"; exit 1; }

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi

# 2. and 3. Every case in one process, with the time guard.
args=(--stop_after_s="$((budget_s - (SECONDS - start)))" --out="$out_dir/gpu_check.jsonl"
      --table_out="$out_dir/gpu_check.md")
[[ "$dry_run" == 1 ]] && args+=(--dry_run)
: >"$out_dir/gpu_check.jsonl"
python3 -m bert_jax.benchmark_sweep "${args[@]}" 2>&1 | tee "$out_dir/gpu_check.log" \
  | grep --line-buffered -v '^[IW][0-9]\{4\} '  # absl's INFO and WARNING lines go to the log only
rc=${PIPESTATUS[0]}
echo "gpu_check: $(wc -l <"$out_dir/gpu_check.jsonl") JSON lines in $out_dir/gpu_check.jsonl; $((SECONDS - start)) s in all; exit $rc"
exit "$rc"
