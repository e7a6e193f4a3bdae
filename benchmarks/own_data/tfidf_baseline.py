"""TF-IDF + logistic regression on a `text<TAB>label` train/dev/test split (the baseline of RESULTS.md).

    python benchmarks/own_data/tfidf_baseline.py [--data_dir=benchmarks/own_data/data]

Word 1-2 grams, sublinear tf, lower-cased (scikit-learn's default token pattern); LogisticRegression
(lbfgs, multinomial) with C chosen on dev accuracy among a few values (ties: the smaller C); the chosen
model is scored once on test. Prints one JSON line. Needs scikit-learn (an extra for this script only).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

C_VALUES = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def read_tsv(path: str) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def scores(gold, pred) -> dict:
    return {"accuracy": round(accuracy_score(gold, pred), 4),
            "macro_f1": round(f1_score(gold, pred, average="macro"), 4),
            "mcc": round(matthews_corrcoef(gold, pred), 4)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    parser.add_argument("--predictions", default="", help="Optional: write the test predictions here (TSV).")
    args = parser.parse_args(argv)
    start = time.time()
    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = (
        read_tsv(os.path.join(args.data_dir, f"{s}.tsv")) for s in ("train", "dev", "test"))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    train_features = vectorizer.fit_transform(x_train)  # fitted on train only
    dev_features, test_features = vectorizer.transform(x_dev), vectorizer.transform(x_test)
    by_c = {}
    for c in C_VALUES:
        model = LogisticRegression(C=c, max_iter=5000).fit(train_features, y_train)
        by_c[c] = (scores(y_dev, model.predict(dev_features)), model)
        print(f"C={c:g}: dev {by_c[c][0]}", file=sys.stderr)
    best_c = max(C_VALUES, key=lambda c: (by_c[c][0]["accuracy"], -c))
    dev, model = by_c[best_c]
    test_predictions = model.predict(test_features)
    test = scores(y_test, test_predictions)
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as f:
            f.write("guid\tprediction\n")
            f.writelines(f"test-{i}\t{label}\n" for i, label in enumerate(test_predictions))
    print(json.dumps({"model": "tfidf_logreg", "C": best_c, "features": len(vectorizer.vocabulary_),
                      "dev": dev, "test": test, "wall_s": round(time.time() - start, 1),
                      "dev_by_C": {str(c): by_c[c][0]["accuracy"] for c in C_VALUES}}))


if __name__ == "__main__":
    main()
