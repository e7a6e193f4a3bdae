"""Sliding-window word-overlap baseline for SQuAD-format QA (Rajpurkar et al. 2016's sliding window, simplified),
scored with the official SQuAD v1.1 EM / F1 (answer normalisation: lowercase, no punctuation, no articles).

    python benchmarks/spanbert/baseline_qa.py DIR/dev.json [--window 4 --max_len 3]

Candidates are every run of 1..max_len whitespace words of the context (end punctuation stripped) none of whose
words occurs in the question. Each candidate scores the number of distinct question words (lowercased, without
the wh-phrase words) found among the `window` words on each side of it; the highest score wins, ties going to the
shorter, then the earlier candidate. No training; nothing is tuned on the dev file apart from the two defaults.
"""

import argparse
import collections
import json
import re
import string

WH = {"what", "which", "how", "many", "option", "file", "command", "who", "when", "where"}


def normalize_answer(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(pred, gold):
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def _words(s):
    return [w.strip(string.punctuation).lower() for w in s.split()]


def predict(context, question, window, max_len):
    toks = context.split()
    low = _words(context)
    qwords = set(_words(question)) - WH - {""}
    best, best_key = "", None
    for i in range(len(toks)):
        for n in range(1, max_len + 1):
            j = i + n
            if j > len(toks):
                break
            if any(w in qwords or w == "" for w in low[i:j]):
                break
            ctx = set(low[max(0, i - window):i]) | set(low[j:j + window])
            score = len(ctx & qwords)
            key = (score, -n, -i)
            if best_key is None or key > best_key:
                best_key = key
                best = " ".join(toks[i:j]).strip(string.punctuation.replace("-", "").replace("/", ""))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--max_len", type=int, default=3)
    args = ap.parse_args()
    em = f1 = n = 0
    for art in json.load(open(args.file))["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                pred = predict(para["context"], qa["question"], args.window, args.max_len)
                golds = [a["text"] for a in qa["answers"]]
                em += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
                f1 += max(f1_score(pred, g) for g in golds)
                n += 1
    print(json.dumps({"file": args.file, "questions": n, "exact_match": round(100 * em / n, 2),
                      "f1": round(100 * f1 / n, 2), "window": args.window, "max_len": args.max_len}))


if __name__ == "__main__":
    main()
