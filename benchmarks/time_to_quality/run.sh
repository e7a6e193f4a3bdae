#!/usr/bin/env bash
# Time to quality: BERT-2018 against the modern encoder block (pre-norm, final norm, GeGLU at 2/3 width, RoPE,
# no biases, 30% masking, warmup-stable-1-sqrt-decay with StableAdamW) at BERT-Mini size, the same wall-clock
# budget, corpus, tokenizer and held-out masking (15%), on the default corpus (stdlib docstrings) and on the
# prose of the installed man pages. See run_ttq.py for the protocol and RESULTS.md for the figures.
#
#   bash benchmarks/time_to_quality/run.sh [OUT]            (from the repository root; OUT default /tmp/ttq)
#   DRY_RUN=1 bash benchmarks/time_to_quality/run.sh [OUT]  (bert_tiny, 20 s per run: checks the pipeline)
#
# BUDGET (seconds of training per run, default 480) and any extra run_ttq.py flags in TTQ_FLAGS, e.g.
# TTQ_FLAGS=--clock=cpu BUDGET=800 on a machine other jobs share (the budget then counts CPU seconds).
# About 4 x (BUDGET + 4 min) in all on a 2-core CPU.
#
# MODELS (default bert2018,modern) picks the models; hf_trainer adds transformers' Trainer (run_mlm.py's path,
# run_hf_trainer.py; needs torch, transformers and accelerate), which runs after the bert_jax models and
# takes its tokenizer, split, size, budget and clock from the bert2018 run, e.g.
#   MODELS=bert2018,modern,hf_trainer TTQ_FLAGS=--clock=cpu bash benchmarks/time_to_quality/run.sh
# (HF_FLAGS: extra run_hf_trainer.py flags). About 2 x (BUDGET + 3 min) more.
# bert2018_fast is BERT-2018 with the README's CPU switches (model.matmul_dtype=auto: bf16 matmul operands where
# the CPU has them; data.pack_sequences=True). Issue 21's comparison with the Trainer, at the project's default
# vocabulary (30,522) and batch 8 (run_mlm.py's default per-device batch):
#   MODELS=bert2018,hf_trainer,bert2018_fast BUDGET=600 TTQ_FLAGS="--clock cpu --calibration_steps 20 --points 12
#     --batch_size 8 --learning_rate 5e-4 --vocab_size 30522" bash benchmarks/time_to_quality/run.sh OUT
set -euo pipefail
HERE=benchmarks/time_to_quality
OUT=${1:-/tmp/ttq}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-$PWD}

# 1. the larger corpus: man-page prose (~6.8 MB, ~1.1M words); the default corpus is built by the runs themselves
[[ -s "$OUT/man_prose.txt" ]] || python $HERE/build_corpus.py --out "$OUT/man_prose.txt"

# 2. calibration, the timed runs and the fixed-masking evaluation of their checkpoints
MODELS=${MODELS:-bert2018,modern}
JAX_MODELS=$(tr "," "\n" <<< "$MODELS" | { grep -vx hf_trainer || true; } | paste -sd, -)
if [[ -n "$JAX_MODELS" ]]; then
  if [[ -n "${DRY_RUN:-}" ]]; then
    python $HERE/run_ttq.py --out "$OUT/runs" --corpora "default,man:$OUT/man_prose.txt" --models "$JAX_MODELS" \
      --dry_run ${TTQ_FLAGS:-}
  else
    python $HERE/run_ttq.py --out "$OUT/runs" --corpora "default,man:$OUT/man_prose.txt" --models "$JAX_MODELS" \
      --budget_seconds "${BUDGET:-480}" ${TTQ_FLAGS:-}
  fi
fi
if [[ ",$MODELS," == *,hf_trainer,* ]]; then  # the same budget and clock as the bert2018 runs (their run.json)
  python $HERE/run_hf_trainer.py --out "$OUT/runs" --corpora default,man ${DRY_RUN:+--dry_run} ${HF_FLAGS:-}
fi

# 3. RESULTS.md and the curves (into OUT; copy them next to this script for the record)
python $HERE/report.py --out "$OUT/runs" --results "$OUT/RESULTS.md" --png "$OUT/ttq_curves.png"

# 4. the frequent-token baseline of each corpus's held-out split (a model that ignores context scores this)
for corpus in default man; do
  python benchmarks/spanbert/unigram_baseline.py "$OUT/runs/$corpus/bert2018/run" | tail -1
done
