"""Builds a small labelled text-classification set from the installed Python standard library, offline.

Each example is the docstring of one function, method or class (its first prose paragraphs), labelled by
the top-level stdlib package its source file belongs to. The files are parsed with `ast`, never imported.

    python benchmarks/own_data/build_docstring_task.py [--output_dir=benchmarks/own_data/data]

writes train.tsv, dev.tsv, test.tsv (header `text<TAB>label`) and stats.json. The output depends only on
the stdlib source files (the same Python version gives the same files, byte for byte).

How it is built:
- Packages (classes): eight stdlib packages with many docstrings spread over many source files, so that a
  split by file still leaves every class in every split: asyncio, distutils, email, importlib,
  multiprocessing, unittest, xml, and http+urllib (one class, `http_urllib`). Packages whose docstrings
  sit in one or two files (tkinter/__init__.py, logging/__init__.py, single-module packages) are left out:
  a file-level split cannot spread them over train/dev/test.
- Text: `ast.get_docstring` (indentation cleaned) of every FunctionDef / AsyncFunctionDef / ClassDef;
  paragraphs (blank-line separated) that are doctest examples (`>>>`) are dropped, the first three prose
  paragraphs are kept and joined with spaces, whitespace (tabs, newlines) is collapsed to single spaces,
  and the text is cut at 1,000 characters. Texts shorter than 40 characters after cleaning are dropped.
- Leakage: the package names themselves are removed from every text (case-insensitive, whole words: any
  dotted path starting with one, e.g. `email.message.Message`, `asyncio.Future`, is removed whole, then
  the bare words asyncio, distutils, email, importlib, multiprocessing, unittest, xml, http, urllib).
  Content words that are not package names (message, header, element, cookie, loop, ...) remain: they are
  what the classifier has to use.
- Deduplication: texts are compared after lower-casing; a text that occurs more than once is kept once
  (its first occurrence in sorted file order) when all its occurrences share a label, and dropped
  everywhere when its occurrences have different labels.
- Split (about 60/20/20 of the examples of each class), by source file, never by example: docstrings of
  the same module are often near-duplicates (overloads, subclasses restating their base, `Return the
  ...` families), so an example-level split would put near-copies of test examples in training and
  measure memorisation. Within each class, the files are ordered by the SHA-256 of their path relative to
  the stdlib directory (a fixed, arbitrary order) and each file in turn goes, with all its examples, to
  the split furthest below its target share (60/20/20) of that class's examples. A plain "hash mod 5" of
  the path would do the same job but leave some classes with no dev or test examples (a few files hold a
  large part of each package's docstrings, e.g. unittest/case.py and unittest/mock.py hold 110 of 154).
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import json
import os
import re
import sys
import sysconfig

# Top-level stdlib package (first path component) -> label.
PACKAGES = {
    "asyncio": "asyncio",
    "distutils": "distutils",
    "email": "email",
    "importlib": "importlib",
    "multiprocessing": "multiprocessing",
    "unittest": "unittest",
    "xml": "xml",
    "http": "http_urllib",
    "urllib": "http_urllib",
}
SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__"}
SPLITS = (("train", 0.6), ("dev", 0.2), ("test", 0.2))
MIN_CHARS = 40
MAX_CHARS = 1000
MAX_PARAGRAPHS = 3

_NAMES = "|".join(sorted(PACKAGES, key=len, reverse=True))
_DOTTED = re.compile(rf"\b(?:{_NAMES})(?:\.\w+)+", re.IGNORECASE)
_BARE = re.compile(rf"\b(?:{_NAMES})\b", re.IGNORECASE)


def clean(docstring: str) -> str:
    """The first prose paragraphs of a cleaned docstring, on one line, package names removed."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", docstring) if p.strip()]
    prose = [p for p in paragraphs if not p.lstrip().startswith(">>>")][:MAX_PARAGRAPHS]
    text = " ".join(prose)
    text = _DOTTED.sub("", text)
    text = _BARE.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()  # tabs and newlines too: one TSV line per example
    return text[:MAX_CHARS].strip()


def source_files(stdlib: str) -> list[str]:
    """Paths (relative to the stdlib directory, '/'-separated) of the .py files of the chosen packages."""
    rels = []
    for package in sorted(PACKAGES):
        top = os.path.join(stdlib, package)
        for root, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
            for name in sorted(names):
                if name.endswith(".py"):
                    rels.append(os.path.relpath(os.path.join(root, name), stdlib).replace(os.sep, "/"))
    return sorted(rels)


def docstrings(path: str) -> list[str]:
    """Function, method and class docstrings of one file, in ast.walk order (deterministic)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found.append(doc)
    return found


def build(stdlib: str):
    """Returns {split: [(text, label), ...]} and a stats dict."""
    # 1. Examples per file.
    per_file: dict[str, list[tuple[str, str]]] = {}
    for rel in source_files(stdlib):
        label = PACKAGES[rel.split("/")[0]]
        try:
            docs = docstrings(os.path.join(stdlib, rel))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        examples = [(t, label) for t in map(clean, docs) if len(t) >= MIN_CHARS]
        if examples:
            per_file[rel] = examples

    # 2. Deduplicate across the whole set (lower-cased text).
    labels_of = collections.defaultdict(set)
    for examples in per_file.values():
        for text, label in examples:
            labels_of[text.lower()].add(label)
    seen, dropped_dup, dropped_conflict = set(), 0, 0
    for rel in sorted(per_file):
        kept = []
        for text, label in per_file[rel]:
            key = text.lower()
            if len(labels_of[key]) > 1:
                dropped_conflict += 1
            elif key in seen:
                dropped_dup += 1
            else:
                seen.add(key)
                kept.append((text, label))
        per_file[rel] = kept

    # 3. Split by file: within each class, files in SHA-256 order, each to the split furthest below target.
    files_of = collections.defaultdict(list)
    for rel, examples in per_file.items():
        if examples:
            files_of[examples[0][1]].append(rel)
    splits = {name: [] for name, _ in SPLITS}
    file_split = {}
    for label in sorted(files_of):
        files = sorted(files_of[label], key=lambda r: hashlib.sha256(r.encode()).hexdigest())
        total = sum(len(per_file[r]) for r in files)
        counts = {name: 0 for name, _ in SPLITS}
        for rel in files:
            name = max(SPLITS, key=lambda s: (s[1] * total - counts[s[0]], s[1]))[0]
            counts[name] += len(per_file[rel])
            splits[name].extend(per_file[rel])
            file_split[rel] = name

    stats = {
        "python": sys.version.split()[0],
        "stdlib": stdlib,
        "labels": sorted(files_of),
        "dropped_duplicates": dropped_dup,
        "dropped_label_conflicts": dropped_conflict,
        "examples": {name: len(rows) for name, rows in splits.items()},
        "per_label": {name: dict(sorted(collections.Counter(l for _, l in rows).items()))
                      for name, rows in splits.items()},
        "files": {name: sorted(r for r, s in file_split.items() if s == name) for name, _ in SPLITS},
        "mean_chars": {name: round(sum(len(t) for t, _ in rows) / max(1, len(rows)), 1)
                       for name, rows in splits.items()},
    }
    return splits, stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    parser.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    args = parser.parse_args(argv)
    splits, stats = build(args.stdlib)
    os.makedirs(args.output_dir, exist_ok=True)
    for name, rows in splits.items():
        with open(os.path.join(args.output_dir, f"{name}.tsv"), "w", encoding="utf-8", newline="\n") as f:
            f.write("text\tlabel\n")
            for text, label in rows:
                assert "\t" not in text and "\n" not in text
                f.write(f"{text}\t{label}\n")
    with open(os.path.join(args.output_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")
    print(json.dumps({k: stats[k] for k in ("python", "labels", "examples", "per_label",
                                            "dropped_duplicates", "dropped_label_conflicts")}))


if __name__ == "__main__":
    main()
