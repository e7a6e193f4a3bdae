#!/usr/bin/env bash
# MLM+TLM (tlm_ratio 0.5) against almost-MLM-only (tlm_ratio 0.02), 1,500 steps each, same corpus/tokenizer/seed.
set -u
M=/tmp/evid/ml/mono; P=/tmp/evid/ml/para
TOK=/tmp/evid/pre_tlm/tokenizer/spm.model
cd "$(dirname "$0")/../.."
for r in 0.5 0.02; do
  /usr/bin/time -f "%e s wall" env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python -m bert_jax.pretrain \
    --config=benchmarks/multilingual/xlm_tlm_tiny.py --workdir=/tmp/evid/tlm_r$r \
    --config.data.corpus=en:$M/en,de:$M/de,ru:$M/ru,ja:$M/ja \
    --config.data.parallel_corpus=en-de:$P/train.en-de,en-ru:$P/train.en-ru,en-ja:$P/train.en-ja \
    --config.data.tokenizer_model=$TOK --config.data.tlm_ratio=$r \
    --config.train.num_train_steps=1500 --config.train.warmup_steps=150 --config.train.eval_every_steps=500 \
    --config.checkpoint.every_steps=500 > /tmp/evid/tlm_r$r.log 2>&1
  echo "r=$r rc=$?" >> /tmp/evid/tlm_pair.done
done
