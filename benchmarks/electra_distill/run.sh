#!/usr/bin/env bash
# Issue 17 point 6 (a), (b) and (c): BERT (MLM) against ELECTRA at the same discriminator size, the same corpus
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

# ---------------------------------------------------------------------------------------------------------
# (c) a DistilBERT student of (a) against (a) itself. Student: half of (a)'s layers (1 x 128, from teacher
#     layer 0, no segment table), configs/distill/distilbert_base.py with its loss weights 5 / 2 / 1 and T = 2,
#     but (a)'s data and optimiser settings (batch 32 x 128, 20 predictions, lr 2e-3, warmup 10%, b2 0.999,
#     clipping 1.0). Budget: the same 420 s of measured step time, i.e. STEPS_MLM x t(mlm) / t(distill) with
#     both step times measured back to back (distill, mlm, mlm, distill). Set STEPS_DISTIL to skip the timing
#     (RESULTS.md: 2022).
DOV="--config.data.max_seq_length=128 --config.masking.max_predictions_per_seq=20 --config.train.global_batch_size=32
     --config.train.learning_rate=2e-3 --config.train.adam_b2=0.999 --config.train.max_grad_norm=1.0"
if [[ -z "${STEPS_DISTIL:-}" ]]; then
  rm -f "$OUT/bench_distil.jsonl"
  for c in distill mlm mlm distill; do
    if [[ $c == mlm ]]; then args=(--config=$HERE/mlm_tiny.py)
    else args=(--config=configs/distill/distilbert_base.py --teacher_config=$HERE/mlm_tiny.py $DOV); fi
    python -m bert_jax.benchmark "${args[@]}" --batch_size=32 --seq_len=128 --steps=40 --warmup_steps=5 \
      --append_to="$OUT/bench_distil.jsonl" | tail -1 > /dev/null
  done
  STEPS_DISTIL=$(python - "$OUT/bench_distil.jsonl" "$STEPS_MLM" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
t = {k: sum(r["step_time_median_s"] for r in rows if r["config"].endswith(f)) / 2
     for k, f in (("distill", "distilbert_base.py"), ("mlm", "mlm_tiny.py"))}
print(round(int(sys.argv[2]) * t["mlm"] / t["distill"]))
PY
)
fi
echo "steps: distil $STEPS_DISTIL"
python -m bert_jax.distill --config=configs/distill/distilbert_base.py --config.teacher_checkpoint="$OUT/pre_mlm" \
  --workdir="$OUT/distil_student" $DOV --config.train.num_train_steps=$STEPS_DISTIL \
  --config.train.warmup_steps=$((STEPS_DISTIL / 10)) --config.train.log_every_steps=100 \
  --config.train.eval_every_steps=500 --config.checkpoint.every_steps=500
python -m bert_jax.export --workdir="$OUT/distil_student" --output="$OUT/export_distil" --format=params
python -m bert_jax.finetune --config=configs/finetune/own_data.py \
  --config.init_checkpoint="$OUT/export_distil" --config.data.train_file=$D/train.tsv \
  --config.data.validation_file=$D/dev.tsv --config.data.test_file=$D/test.tsv \
  --config.data.max_seq_length=128 --config.train.learning_rate=1e-3 \
  --config.train.num_train_epochs=10 --config.train.global_batch_size=32 --workdir="$OUT/ft_distil"
# speed of the plain pretraining step at each shape (teacher = mlm_tiny; student = the same with 1 layer and
# no segment table), back to back: teacher, student, student, teacher
rm -f "$OUT/speed.jsonl"
for c in teacher student student teacher; do
  extra=(); [[ $c == student ]] && extra=(--config.model.num_hidden_layers=1 --config.model.type_vocab_size=0)
  python -m bert_jax.benchmark --config=$HERE/mlm_tiny.py "${extra[@]}" --batch_size=32 --seq_len=128 --steps=40 \
    --warmup_steps=5 --append_to="$OUT/speed.jsonl" | tail -1 > /dev/null
done
# prediction on own_data's test file with each fine-tuned model, wall time, back to back
for m in mlm distil mlm distil; do
  /usr/bin/time -f "predict $m: %e s wall" python -m bert_jax.predict --model="$OUT/ft_$m" --input=$D/test.tsv \
    --output="$OUT/pred_$m.jsonl" 2>&1 | tail -1
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ev = [json.loads(l) for l in open(f"{out}/distil_student/metrics.jsonl") if '"eval"' in l][-1]
ft = json.load(open(f"{out}/ft_distil/metrics.json"))
seed = ft["seeds"][0]
print("distil held-out:", json.dumps({k: v for k, v in ev.items() if k != "split"}))
print("distil fine-tune: best epoch", seed["history"][[h["step"] for h in seed["history"]].index(seed["best_step"])]["epoch"],
      "dev", json.dumps(seed["best"]["validation"]), "test", json.dumps(ft["test"]))
for r in (json.loads(l) for l in open(f"{out}/speed.jsonl")):
    print("speed", r["model_flops_per_step"], round(r["step_time_median_s"] * 1000, 1), "ms", round(r["sequences_per_second"], 1), "seq/s")
PY
