#!/usr/bin/env bash
# Issue 17 point 6 (a) and (b): BERT (MLM) against ELECTRA at the same discriminator size, the same corpus
# (the embedded stdlib-docstring default), the same tokenizer and the same budget of measured step time,
# then both fine-tuned on benchmarks/own_data. See RESULTS.md.
#
#   bash benchmarks/electra_distill/run.sh [OUT]          (from the repository root; OUT default /tmp/ed)
#
# BUDGET_S (default 420) is the budget of measured train-step seconds each model gets. The steps are
# BUDGET_S / median step time from `bert_jax.benchmark` (two alternating runs per config, averaged); set
# STEPS_MLM and STEPS_ELECTRA to skip the timing and reuse the figures of RESULTS.md (2338 and 1512).
set -euo pipefail
OUT=${1:-/tmp/ed}
BUDGET_S=${BUDGET_S:-420}
HERE=benchmarks/electra_distill
D=benchmarks/own_data/data
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1   # the CPU speed-up bert_jax.benchmark recommends; used throughout
mkdir -p "$OUT"

# 1. step times, back to back under the same conditions (synthetic full-length batches, 32 x 128)
if [[ -z "${STEPS_MLM:-}" || -z "${STEPS_ELECTRA:-}" ]]; then
  rm -f "$OUT/bench.jsonl"
  for c in mlm_tiny electra_tiny electra_tiny mlm_tiny; do
    python -m bert_jax.benchmark --config=$HERE/$c.py --batch_size=32 --seq_len=128 --steps=40 --warmup_steps=5 \
      --append_to="$OUT/bench.jsonl" | tail -1 > /dev/null
  done
  read -r STEPS_MLM STEPS_ELECTRA < <(python - "$OUT/bench.jsonl" "$BUDGET_S" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
t = {name: sum(r["step_time_median_s"] for r in rows if name in r["config"]) / 2 for name in ("mlm_tiny", "electra_tiny")}
print(*(round(float(sys.argv[2]) / t[name]) for name in ("mlm_tiny", "electra_tiny")))
PY
)
fi
echo "steps: mlm $STEPS_MLM, electra $STEPS_ELECTRA (budget ${BUDGET_S}s of measured step time)"

# 2. pretraining; warmup 10% of the steps, then linear decay to 0, lr 2e-3, batch 32 x 128, for both.
#    (a) trains the 8,192-piece SentencePiece tokenizer; (b) reuses that file.
python -m bert_jax.pretrain --config=$HERE/mlm_tiny.py --workdir="$OUT/pre_mlm" \
  --config.train.num_train_steps=$STEPS_MLM --config.train.warmup_steps=$((STEPS_MLM / 10))
python -m bert_jax.pretrain --config=$HERE/electra_tiny.py --workdir="$OUT/pre_electra" \
  --config.data.tokenizer_model="$OUT/pre_mlm/tokenizer/spm.model" \
  --config.train.num_train_steps=$STEPS_ELECTRA --config.train.warmup_steps=$((STEPS_ELECTRA / 10))

# 3. params exports (ELECTRA's holds the discriminator, which fine-tuning reads; the generator is dropped)
for m in mlm electra; do
  python -m bert_jax.export --workdir="$OUT/pre_$m" --output="$OUT/export_$m" --format=params
done

# 4. the own-data fine-tune, the same settings as benchmarks/own_data/RESULTS.md's BERT-Tiny row
for m in mlm electra; do
  python -m bert_jax.finetune --config=configs/finetune/own_data.py \
    --config.init_checkpoint="$OUT/export_$m" --config.data.train_file=$D/train.tsv \
    --config.data.validation_file=$D/dev.tsv --config.data.test_file=$D/test.tsv \
    --config.data.max_seq_length=128 --config.train.learning_rate=1e-3 \
    --config.train.num_train_epochs=10 --config.train.global_batch_size=32 --workdir="$OUT/ft_$m"
done

# 5. the figures of RESULTS.md (held-out = the trainer's last evaluation; for ELECTRA mlm_* is the generator's)
python benchmarks/electra_distill/rtd_probe.py "$OUT/pre_electra" | tail -1
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for m in ("mlm", "electra"):
    evals = [json.loads(l) for l in open(f"{out}/pre_{m}/metrics.jsonl") if '"eval"' in l]
    ft = json.load(open(f"{out}/ft_{m}/metrics.json"))
    seed = ft["seeds"][0]
    print(m, "held-out:", json.dumps({k: v for k, v in evals[-1].items() if k != "split"}))
    print(m, "fine-tune: best epoch", seed["history"][[h["step"] for h in seed["history"]].index(seed["best_step"])]["epoch"],
          "dev", json.dumps(seed["best"]["validation"]), "test", json.dumps(ft["test"]))
PY
