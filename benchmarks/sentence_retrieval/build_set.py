"""Builds a retrieval set from the installed Python standard library, offline: summary line -> rest of the docstring.

For every function, method and class docstring of the stdlib (parsed with `ast`, never imported) whose first
paragraph is a one-line summary and whose following prose is at least 80 characters, the summary is a query
and the prose after it (doctest paragraphs dropped, whitespace collapsed, cut at 1,000 characters) its one
relevant document. Pairs whose query or document occurs twice (lower-cased) are dropped everywhere.

    python benchmarks/sentence_retrieval/build_set.py [--output_dir=/tmp/stdlib_retrieval]

writes train.tsv (header `query<TAB>document`: the contrastive training pairs), dev.tsv (the same, for
choosing the checkpoint) and test/ in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv), split
by source file (SHA-256 of the path, mod 10: 0 -> test, 1 -> dev, else train) so that near-duplicate
docstrings of one module never sit on both sides. The output depends only on the stdlib source files.
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import json
import os
import re
import sysconfig


def _prose(paragraphs: list[str]) -> str:
    kept = [p for p in paragraphs if not p.lstrip().startswith(">>>")]
    return re.sub(r"\s+", " ", " ".join(kept)).strip()[:1000]


def pairs_of_file(path: str) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()]
        if len(paragraphs) < 2 or "\n" in paragraphs[0] or len(paragraphs[0]) < 15:
            continue
        body = _prose(paragraphs[1:])
        if len(body) >= 80:
            pairs.append((re.sub(r"\s+", " ", paragraphs[0]), body))
    return pairs


def build(output_dir: str) -> dict:
    stdlib = sysconfig.get_paths()["stdlib"]
    by_split = collections.defaultdict(list)
    seen = collections.Counter()
    files = []
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "idle_test", "site-packages", "__pycache__"))
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    found = []
    for path in files:
        relative = os.path.relpath(path, stdlib)
        bucket = int(hashlib.sha256(relative.encode()).hexdigest(), 16) % 10
        split = "test" if bucket == 0 else "dev" if bucket == 1 else "train"
        for query, document in pairs_of_file(path):
            found.append((split, query, document))
            seen[query.lower()] += 1
            seen[document.lower()] += 1
    for split, query, document in found:
        if seen[query.lower()] == 1 and seen[document.lower()] == 1 and "\t" not in query + document:
            by_split[split].append((query, document))
    os.makedirs(os.path.join(output_dir, "test", "qrels"), exist_ok=True)
    for split in ("train", "dev"):
        with open(os.path.join(output_dir, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("query\tdocument\n")
            f.writelines(f"{q}\t{d}\n" for q, d in by_split[split])
    test = by_split["test"]
    with open(os.path.join(output_dir, "test", "corpus.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": f"d{i}", "text": d}) + "\n" for i, (_, d) in enumerate(test))
    with open(os.path.join(output_dir, "test", "queries.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, (q, _) in enumerate(test))
    with open(os.path.join(output_dir, "test", "qrels", "test.tsv"), "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"q{i}\td{i}\t1\n" for i in range(len(test)))
    stats = {split: len(rows) for split, rows in by_split.items()}
    with open(os.path.join(output_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2)
    return stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="/tmp/stdlib_retrieval")
    print(json.dumps(build(parser.parse_args().output_dir)))


if __name__ == "__main__":
    main()
