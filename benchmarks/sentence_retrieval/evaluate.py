"""nDCG@10 / MRR@10 / Recall@100 on the stdlib retrieval set (build_set.py) of the encoders a fine-tune is
compared with: TF-IDF (the simple baseline), an encoder's mean-pooled token vectors without contrastive
training, and an imported sentence-transformers model.

    python benchmarks/sentence_retrieval/evaluate.py --set=/tmp/stdlib_retrieval --checkpoint=EXPORT_OR_RUN \
        [--pooling=mean] [--normalize] [--max_seq_length=128] [--name=...]
    python benchmarks/sentence_retrieval/evaluate.py --set=/tmp/stdlib_retrieval --tfidf

prints one JSON line: {"name", "ndcg@10", "mrr@10", "recall@100", ...}.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from bert_jax.finetuning import embedding, retrieval, transfer


def _tfidf_encoder(directory: str):
    from sklearn.feature_extraction.text import TfidfVectorizer

    data = retrieval.read_beir(directory, "test")
    vectorizer = TfidfVectorizer(sublinear_tf=True).fit(list(data.corpus_texts) + list(data.query_texts))
    return lambda texts: vectorizer.transform(texts).toarray().astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="build_set.py's output directory")
    parser.add_argument("--checkpoint", default="", help="a params export, pretraining run or model directory")
    parser.add_argument("--tfidf", action="store_true")
    parser.add_argument("--pooling", default="mean", choices=("mean", "cls"))
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--name", default="")
    args = parser.parse_args()
    test = os.path.join(args.set, "test")
    if args.tfidf:
        encode, name = _tfidf_encoder(test), "tf-idf (sklearn, sublinear tf)"
    else:
        embedder = embedding.Embedder(transfer.load_pretrained(args.checkpoint), pooling=args.pooling)
        encode = lambda texts: embedder(texts, max_seq_length=args.max_seq_length, batch_size=64)  # noqa: E731
        name = args.name or f"{args.checkpoint} ({args.pooling} pooling, no contrastive training)"
    result = retrieval.evaluate_retrieval(encode, test, "test")
    print(json.dumps({"name": name, **result}))


if __name__ == "__main__":
    main()
