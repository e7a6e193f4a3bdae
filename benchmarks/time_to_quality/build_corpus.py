"""A larger real-text corpus, offline: the prose of the installed man pages (all sections), as pretraining text.

    python benchmarks/time_to_quality/build_corpus.py --out FILE [--man_root /usr/share/man] [--max_per_family 60]

writes FILE (google-research/bert format: one sentence per line, one man page per document, documents separated
by blank lines) and FILE.stats.json (pages, paragraphs, sentences, words, characters).

The roff reader is benchmarks/spanbert/build_qa.py's (macros and escapes stripped with the standard library,
code/tables/definitions skipped). Kept: paragraphs of at least 8 words, mostly alphabetic, outside the NAME /
SYNOPSIS / COPYRIGHT / AUTHOR(S) / SEE ALSO sections, de-duplicated on their normalised text over all pages
(GNU boilerplate is kept once), at most --max_per_family per page family (the name up to the first _ or -), so
the ~10,000 generated gcloud_* pages do not make up most of the text. Pages that only include another (.so)
and byte-identical pages are skipped. Deterministic: sorted file order, no randomness.
"""

import argparse
import collections
import gzip
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spanbert"))
from build_qa import SENT_SPLIT, roff_paragraphs

from bert_jax.runtime import atomic

SKIPPED_SECTIONS = ("SYNOPSIS", "NAME", "COPYRIGHT", "AUTHOR", "AUTHORS", "REPORTING BUGS", "SEE ALSO")


def _prose(text: str) -> bool:
    words = text.split()
    alpha = sum(1 for w in words if re.fullmatch(r"[(\"']?[A-Za-z][a-z'-]*[,.;:)\"']*", w))
    return len(words) >= 8 and alpha / len(words) >= 0.6


def _pages(man_root: str):
    """(page name, roff text) of every distinct real page under man_root/man*/ in sorted order."""
    seen = set()
    for section in sorted(d for d in os.listdir(man_root) if re.fullmatch(r"man\w+", d)):
        directory = os.path.join(man_root, section)
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not name.endswith(".gz") or os.path.islink(path):
                continue
            try:
                with gzip.open(path, "rb") as page:
                    raw = page.read().decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            digest = hashlib.sha1(raw.encode()).hexdigest()
            if raw.lstrip().startswith(".so ") or len(raw) < 200 or digest in seen:
                continue
            seen.add(digest)
            yield name[:-3].rsplit(".", 1)[0], raw


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--man_root", default="/usr/share/man")
    parser.add_argument("--max_per_family", type=int, default=60)
    args = parser.parse_args()
    seen_paragraphs, counts, stats = set(), collections.Counter(), collections.Counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with atomic.writer(args.out) as out:  # run.sh reuses a non-empty file: never a half-written one
        for page_name, raw in _pages(args.man_root):
            family = re.split(r"[_-]", page_name)[0]
            sentences = []
            for section, text in roff_paragraphs(raw):
                text = re.sub(r"\s+", " ", text).strip()
                key = re.sub(r"\W+", " ", text.lower())
                if section in SKIPPED_SECTIONS or not _prose(text) or key in seen_paragraphs:
                    continue
                seen_paragraphs.add(key)
                counts[family] += 1
                if counts[family] > args.max_per_family:
                    continue
                stats["paragraphs"] += 1
                sentences += SENT_SPLIT.split(text)
            if not sentences:
                continue
            out.write("\n".join(sentences) + "\n\n")
            stats["pages"] += 1
            stats["sentences"] += len(sentences)
            stats["words"] += sum(len(s.split()) for s in sentences)
            stats["characters"] += sum(len(s) + 1 for s in sentences)
    atomic.write_json(args.out + ".stats.json", dict(stats), indent=1)
    print(json.dumps(dict(stats)))


if __name__ == "__main__":
    main()
