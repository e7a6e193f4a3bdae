"""Unigram-frequency baseline for held-out MLM accuracy: always predict the most frequent training token.

    python benchmarks/spanbert/unigram_baseline.py WORKDIR [WORKDIR ...]

Reads every tokenized dataset under WORKDIR/corpus (each directory holding an index.json: one for a plain
corpus, one per language for a language-tagged one), counts token ids over its train split, and reports the
share of its held-out (eval) tokens equal to the most frequent training token. Under token masking every real
token is equally likely to be masked, so this is the expected MLM accuracy of a model that ignores context
(span masking picks whole words, so for it the figure is an approximation).
"""

import glob
import json
import os
import sys

import numpy as np

from bert_jax.data import sharded_corpus


def main():
    for workdir in sys.argv[1:]:
        for index_path in sorted(glob.glob(os.path.join(workdir, "corpus", "**", "index.json"), recursive=True)):
            d = os.path.dirname(index_path)
            index = sharded_corpus.read_index(d)
            if not index or "train" not in index["splits"] or "eval" not in index["splits"]:
                continue
            sources = sharded_corpus.load_sources(d, index)
            counts = {}
            for split in ("train", "eval"):
                src = sources[split]
                toks = np.concatenate([src[i]["tokens"] for i in range(len(src))])
                counts[split] = np.bincount(toks, minlength=1)
            top = int(np.argmax(counts["train"]))
            ev = counts["eval"]
            acc = float(ev[top]) / float(ev.sum()) if top < len(ev) else 0.0
            meta = index.get("metadata", {})
            print(json.dumps({"dataset": os.path.relpath(d, workdir), "language": meta.get("language"),
                              "corpus": meta.get("corpus"), "most_frequent_train_token_id": top,
                              "eval_tokens": int(ev.sum()), "unigram_baseline_accuracy": round(acc, 4)}))


if __name__ == "__main__":
    main()
