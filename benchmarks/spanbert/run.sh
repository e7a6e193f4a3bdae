#!/usr/bin/env bash
# SpanBERT against BERT at the BERT-Tiny shape, the same steps, batch, corpus (the embedded stdlib-docstring
# default) and tokenizer, then both fine-tuned on cloze-style QA built from the installed man pages.
# See RESULTS.md.
#
#   bash benchmarks/spanbert/run.sh [OUT]        (from the repository root; OUT default /tmp/evid)
#
# STEPS (default 1500) pretraining steps each, warmup 10%.
set -euo pipefail
OUT=${1:-/tmp/evid}
STEPS=${STEPS:-1500}
HERE=benchmarks/spanbert
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1   # the CPU speed-up bert_jax.benchmark recommends; used throughout
mkdir -p "$OUT"

# 1. the QA data (train.json / dev.json, SQuAD v1.1) and the heuristic baseline on it
python $HERE/build_qa.py --out "$OUT/qa"
python $HERE/baseline_qa.py "$OUT/qa/dev.json"

# 2. pretraining: (a) BERT (MLM, token masking, single full-sentence segments) trains the 8,192-piece
#    tokenizer; (b) SpanBERT (MLM + SBO, span masking) reuses that file.
python -m bert_jax.pretrain --config=$HERE/bert_1seq.py --workdir="$OUT/pre_bert" \
  --config.train.num_train_steps=$STEPS --config.train.warmup_steps=$((STEPS / 10))
python -m bert_jax.pretrain --config=$HERE/spanbert_tiny.py --workdir="$OUT/pre_spanbert" \
  --config.data.tokenizer_model="$OUT/pre_bert/tokenizer/spm.model" \
  --config.train.num_train_steps=$STEPS --config.train.warmup_steps=$((STEPS / 10))

# 3. the same QA fine-tune from each (128 tokens = the model's positions, stride 64, lr 1e-3, 3 epochs,
#    batch 32; one dev evaluation per epoch, the best dev F1 (the qa task's selection key) is kept)
for m in bert spanbert; do
  python -m bert_jax.finetune --config=configs/finetune/own_data.py --config.task=qa \
    --config.init_checkpoint="$OUT/pre_$m" --config.data.train_file="$OUT/qa/train.json" \
    --config.data.validation_file="$OUT/qa/dev.json" --config.data.max_seq_length=128 \
    --config.data.doc_stride=64 --config.data.max_query_length=48 --config.train.learning_rate=1e-3 \
    --config.train.num_train_epochs=3 --config.train.global_batch_size=32 --workdir="$OUT/ft_$m"
done

# 3b. a randomly initialised encoder through the same fine-tune (a 1-step "pretraining" at lr 1e-9 gives the
#     initialised parameters in a workdir the fine-tune reads)
python -m bert_jax.pretrain --config=$HERE/bert_1seq.py --workdir="$OUT/pre_random" \
  --config.data.tokenizer_model="$OUT/pre_bert/tokenizer/spm.model" \
  --config.train.num_train_steps=1 --config.train.warmup_steps=0 --config.train.learning_rate=1e-9
python -m bert_jax.finetune --config=configs/finetune/own_data.py --config.task=qa \
  --config.init_checkpoint="$OUT/pre_random" --config.data.train_file="$OUT/qa/train.json" \
  --config.data.validation_file="$OUT/qa/dev.json" --config.data.max_seq_length=128 \
  --config.data.doc_stride=64 --config.data.max_query_length=48 --config.train.learning_rate=1e-3 \
  --config.train.num_train_epochs=3 --config.train.global_batch_size=32 --workdir="$OUT/ft_random"

# 3c. held-out MLM accuracy of each model under the other's masking: a copy of the last checkpoint whose stored
#     config says masking.kind=span (BERT) / token (SpanBERT); bert_jax.evaluate reads the config from there.
for m in bert spanbert; do
  kind=$([[ $m == bert ]] && echo span || echo token)
  rm -rf "$OUT/x_$m"; mkdir -p "$OUT/x_$m/checkpoints"
  cp -r "$OUT/pre_$m/checkpoints/$STEPS" "$OUT/x_$m/checkpoints/"
  python - "$OUT/x_$m/checkpoints/$STEPS/meta/metadata" $kind <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); d["config"]["masking"]["kind"] = sys.argv[2]; json.dump(d, open(sys.argv[1], "w"))
PY
  python -m bert_jax.evaluate --workdir="$OUT/x_$m" | tail -1
done
python $HERE/unigram_baseline.py "$OUT/pre_bert"

# 4. the figures of RESULTS.md (held-out = the trainer's last evaluation)
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for m in ("bert", "spanbert"):
    evals = [json.loads(l) for l in open(f"{out}/pre_{m}/metrics.jsonl") if '"eval"' in l]
    print(m, "held-out:", json.dumps({k: v for k, v in evals[-1].items() if k != "split"}))
for m in ("bert", "spanbert", "random"):
    ft = json.load(open(f"{out}/ft_{m}/metrics.json"))
    print(m, "fine-tune:", json.dumps(ft["seeds"][0]["best"]), "history:",
          json.dumps([h.get("validation", h) for h in ft["seeds"][0]["history"]]))
PY
