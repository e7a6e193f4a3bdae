"""A small multilingual corpus, offline, from the installed gettext catalogues (/usr/share/locale/*/LC_MESSAGES/*.mo).

    python benchmarks/multilingual/build_corpus.py --out DIR [--langs de,fr,ru,uk,ja,zh_CN] [--locale_dir ...]

writes
  DIR/mono/<lang>/text.txt       one message per line; the messages of one catalogue (.mo file) form one
                                 document, documents separated by blank lines (google-research/bert format).
                                 mono/en/text.txt holds the English msgids, one document per catalogue
                                 domain (taken once, from the union over the requested languages).
  DIR/para/train.en-<lang>.en    aligned English / translation pairs (XLM's file naming): one message per
  DIR/para/train.en-<lang>.<lang> line, the same number of lines in both files.
  DIR/stats.json                 lines, documents, characters per file.

Read with the standard library only: gettext.GNUTranslations(open(path, 'rb'))._catalog (msgid -> msgstr).
Skipped: plural entries (tuple keys), the header (empty msgid), context entries (msgid containing the \\x04
separator), empty or fuzzy-empty translations. A message is flattened to one line (newlines and tabs -> spaces).
Parallel pairs additionally drop: translation identical to the source, sources with no letters once printf /
Python / brace format directives are removed (format-string-only), sources of fewer than 2 characters, and
duplicates (by the (source, target) pair); mono text drops messages that repeat within a catalogue.
Deterministic: sorted file and key order.
"""

import argparse
import gettext
import json
import os
import re

FORMAT = re.compile(r"%(?:\d+\$)?[-+ #0]*\d*(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t|I64|I32)?[diouxXeEfFgGaAcspnm%]"
                    r"|%\([A-Za-z_]+\)[sdif]|\{[^{}]*\}|\$\{?[A-Za-z_]+\}?")


def _flat(s):
    return re.sub(r"\s+", " ", s).strip()


def _has_words(s):
    return re.search(r"[^\W\d_]{2,}", FORMAT.sub(" ", s)) is not None


def read_catalog(path):
    try:
        with open(path, "rb") as f:
            cat = gettext.GNUTranslations(f)._catalog
    except (OSError, UnicodeDecodeError, gettext.error if hasattr(gettext, "error") else OSError, Exception):
        return []
    pairs = []
    for key in sorted(k for k in cat if isinstance(k, str)):
        val = cat[key]
        if not key or "\x04" in key or not isinstance(val, str) or not val.strip():
            continue
        pairs.append((_flat(key), _flat(val)))
    return pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--langs", default="de,fr,ru,uk,ja,zh_CN")
    ap.add_argument("--locale_dir", default="/usr/share/locale")
    args = ap.parse_args()
    langs = args.langs.split(",")
    os.makedirs(os.path.join(args.out, "para"), exist_ok=True)
    stats = {}
    english = {}  # domain -> list of msgids (deduplicated, sorted)
    for lang in langs:
        mo_dir = os.path.join(args.locale_dir, lang, "LC_MESSAGES")
        docs, seen_pairs, para = [], set(), []
        for name in sorted(os.listdir(mo_dir)) if os.path.isdir(mo_dir) else []:
            if not name.endswith(".mo"):
                continue
            pairs = read_catalog(os.path.join(mo_dir, name))
            lines, seen = [], set()
            for src, tgt in pairs:
                if _has_words(tgt) and tgt not in seen:
                    seen.add(tgt)
                    lines.append(tgt)
                if src and _has_words(src):
                    english.setdefault(name[:-3], set()).add(src)
                if len(src) < 2 or src == tgt or not _has_words(src) or not _has_words(tgt):
                    continue
                if (src, tgt) in seen_pairs:
                    continue
                seen_pairs.add((src, tgt))
                para.append((src, tgt))
            if lines:
                docs.append(lines)
        d = os.path.join(args.out, "mono", lang)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "text.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(doc) for doc in docs) + "\n")
        with open(os.path.join(args.out, "para", f"train.en-{lang}.en"), "w", encoding="utf-8") as fe, \
                open(os.path.join(args.out, "para", f"train.en-{lang}.{lang}"), "w", encoding="utf-8") as fl:
            for src, tgt in para:
                fe.write(src + "\n")
                fl.write(tgt + "\n")
        stats[lang] = {"catalogues": len(docs), "mono_lines": sum(map(len, docs)),
                       "mono_chars": sum(len(x) for doc in docs for x in doc), "para_pairs": len(para)}
    d = os.path.join(args.out, "mono", "en")
    os.makedirs(d, exist_ok=True)
    docs = [sorted(english[k]) for k in sorted(english)]
    with open(os.path.join(d, "text.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(doc) for doc in docs) + "\n")
    stats["en"] = {"catalogues": len(docs), "mono_lines": sum(map(len, docs)),
                   "mono_chars": sum(len(x) for doc in docs for x in doc)}
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
