"""Cloze-style extractive QA in SQuAD v1.1 format, built offline from the installed section-1 man pages.

    python benchmarks/spanbert/build_qa.py --out DIR [--man_dir /usr/share/man/man1] [--train 5000 --dev 600]

writes DIR/train.json, DIR/dev.json (SQuAD v1.1) and DIR/stats.json.

Recipe ("unsupervised QA", Lewis et al. 2019, cloze questions with the identity mapping + wh-word):
- contexts: prose paragraphs of /usr/share/man/man1/*.gz, read with gzip; roff macros and escapes are
  stripped here (no groff/man needed). A paragraph is the text between paragraph macros (.PP .LP .P .IP .TP
  .SH .SS .sp .br ...); kept when it has 25-90 words, at least two sentences and mostly alphabetic words.
  Paragraphs are de-duplicated on their normalised text over all pages (GNU boilerplate is kept once).
- answers: one span per chosen sentence, by type: a command-line option (-x, --long-opt), a file path
  (/etc/...), a number, an ALL-CAPS term (POSIX, PATH), a run of Capitalised words not at the sentence start
  (GNU General Public License), or the page's own command name. The first candidate in the type order
  above is taken (deterministic).
- question: that sentence with the answer replaced in place by a wh-phrase of its type (which option /
  which file / how many / what / which command) and a question mark (Lewis et al.'s identity mapping;
  no reordering).
- diversity: at most --max_per_family (40) contexts per page family (the name up to the first _ or -), since
  e.g. the ~10,000 generated gcloud_* pages would otherwise be most of the data.
- split: by man page, on a hash of the page name (about 12% of pages are dev), so dev contexts (and pages)
  never occur in train. At most 2 questions per paragraph (from different sentences).

Deterministic: sorted file order, hash-based choices only, no randomness.
"""

import argparse
import collections
import gzip
import hashlib
import json
import os
import re

MACRO_BREAK = {"PP", "LP", "P", "IP", "TP", "SH", "SS", "sp", "br", "HP", "TQ", "RS", "RE", "nf", "fi", "EX",
               "EE", "in", "ti", "bp", "ne", "Sh", "Ss", "Pp", "Bl", "El", "It", "Bd", "Ed", "D1", "Dl", "TS",
               "TE", "PD", "SY", "YS", "OP", "UR", "UE", "MT", "ME"}
FONT_MACROS = {"B", "I", "SM", "SB"}
ALT_MACROS = {"BR", "RB", "IR", "RI", "BI", "IB"}
NAMED = {"em": "-", "en": "-", "hy": "-", "mi": "-", "aq": "'", "lq": '"', "rq": '"', "oq": "'", "cq": "'",
         "dq": '"', "bu": "*", "co": "(c)", "rg": "(R)", "tm": "(TM)", "ti": "~", "ha": "^", "rs": "\\",
         "at": "@", "sh": "#", "Do": "$", "mu": "x", "<=": "<=", ">=": ">=", "->": "->", "<-": "<-"}


def _escapes(s):
    s = re.sub(r"\\\".*$", "", s)  # comment
    s = re.sub(r"\\f(\(..|\[[^\]]*\]|.)", "", s)  # font changes
    s = re.sub(r"\\s[-+]?\d", "", s)  # size changes
    s = re.sub(r"\\\((..)", lambda m: NAMED.get(m.group(1), ""), s)
    s = re.sub(r"\\\[([^\]]*)\]", lambda m: NAMED.get(m.group(1), ""), s)
    s = re.sub(r"\\\*(\(..|\[[^\]]*\]|.)", "", s)  # string registers (pod2man's \*(C` etc.)
    s = re.sub(r"\\[nk](\(..|\[[^\]]*\]|.)", "", s)
    s = re.sub(r"\\[hvwolLNxbDXZ]'[^']*'", "", s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").replace("\\~", " ")
    s = re.sub(r"\\[&|^%c:)!dur0t]", "", s)
    s = s.replace("\\", "")
    return s


def roff_paragraphs(text):
    """Prose paragraphs (lists of words) of one roff page; code, tables and definitions are skipped."""
    paras, cur = [], []
    skip_until = None
    section = ""

    def flush():
        if cur:
            paras.append((section, " ".join(cur)))
            cur.clear()

    for line in text.splitlines():
        if skip_until is not None:
            if line.strip().startswith(skip_until):
                skip_until = None
            continue
        if line.startswith((".", "'")):
            m = re.match(r"^[.'][ \t]*([A-Za-z0-9]+)\s*(.*)$", line)
            if not m:
                continue
            name, rest = m.group(1), m.group(2)
            if name in ("de", "am", "ig"):
                skip_until = ".."
                continue
            if name in ("nf", "EX", "TS", "Bd"):
                flush()
                skip_until = {"nf": ".fi", "EX": ".EE", "TS": ".TE", "Bd": ".Ed"}[name]
                continue
            if name in ("SH", "SS", "Sh", "Ss"):
                flush()
                section = _escapes(rest).strip('" ').upper()
                continue
            if name in MACRO_BREAK:
                flush()
                if name in ("IP", "HP"):
                    continue
                continue
            if name in FONT_MACROS:
                words = _escapes(rest).replace('"', "").strip()
                if words:
                    cur.append(words)
                continue
            if name in ALT_MACROS:
                parts = re.findall(r'"[^"]*"|\S+', rest)
                joined = "".join(_escapes(p.strip('"')) for p in parts)
                if joined:
                    cur.append(joined)
                continue
            continue  # every other request (.if, .ie, .ds, .nr, .TH, ...) is dropped
        t = _escapes(line).strip()
        if t:
            cur.append(t)
        else:
            flush()
    flush()
    return paras


STOP = set("A An The This That These Those It Its If In On For To By Of As At Or And But Not No Note See Use When With "
           "Without Each Every All Any Some Otherwise Also Default Then Only Do Does You Your We Our Is Are Be May "
           "Can Must Should Will Set Specify Specifies If Unless Since After Before While Where Which What How".split())
STOP_CAPS = {"NOTE", "OR", "AND", "NOT", "TODO", "ALPHA", "BETA", "WARNING", "DEPRECATED", "REQUIRED", "OPTIONAL"}
SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
ANSWER_PATTERNS = [
    ("option", re.compile(r"(?<![\w/-])--?[A-Za-z][A-Za-z0-9_-]*(?:=[A-Za-z_]+)?(?![\w-])"), "which option"),
    ("path", re.compile(r"(?<![\w.])(?:~|/)[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+(?<![.])"), "which file"),
    ("number", re.compile(r"(?<![\w.,-])\d+(?:\.\d+)?(?![\w.]\w)"), "how many"),
    ("caps", re.compile(r"(?<![\w-])[A-Z][A-Z0-9_]{1,}(?![\w-])"), "what"),
    ("name", re.compile(r"(?<=\s)(?:[A-Z][a-z][A-Za-z0-9]*)(?:\s+(?:of\s+|the\s+)?[A-Z][A-Za-z0-9]+)*"), "what"),
]


def _ok_paragraph(text):
    words = text.split()
    if not 25 <= len(words) <= 90:
        return False
    alpha = sum(1 for w in words if re.fullmatch(r"[A-Za-z][a-z'-]*[,.;:]?", w))
    return alpha / len(words) >= 0.6 and len(SENT_SPLIT.split(text)) >= 2


def questions_for(text, page_name, max_q=2):
    """(question, answer_text, answer_start) for up to max_q sentences of the paragraph."""
    out = []
    pos = 0
    for sent in SENT_SPLIT.split(text):
        start = text.index(sent, pos)
        pos = start + len(sent)
        if len(sent.split()) < 6 or not sent.rstrip().endswith((".", "!", ":")):
            continue
        patterns = list(ANSWER_PATTERNS)
        if page_name and len(page_name) > 1:
            patterns.append(("command", re.compile(r"(?<![\w/.-])" + re.escape(page_name) + r"(?![\w-])"),
                             "which command"))
        for kind, pat, wh in patterns:
            best = None
            for m in pat.finditer(sent):
                a = m.group(0)
                if kind == "name" and (m.start() == 0 or a.split()[0] in STOP or sent[:m.start()].rstrip()[-1:] in ":(-"):
                    continue
                if kind == "caps" and (a in STOP_CAPS or sent[:m.start()].rstrip()[-1:] in ":("):
                    continue
                if kind == "number" and m.group(0) in ("1", "0") and "(" in sent[max(0, m.start() - 1):m.start()]:
                    continue
                if len(a) < 1 or len(a.split()) > 5:
                    continue
                best = m
                break
            if best is None:
                continue
            q = (sent[:best.start()] + wh + sent[best.end():]).rstrip().rstrip(".!:") + "?"
            q = q[0].upper() + q[1:]
            out.append((q, best.group(0), start + best.start(), kind))
            break
        if len(out) >= max_q:
            break
    return out


def _h(s):
    return int(hashlib.sha1(s.encode()).hexdigest()[:8], 16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--man_dir", default="/usr/share/man/man1")
    ap.add_argument("--train", type=int, default=5000, help="cap on training questions")
    ap.add_argument("--dev", type=int, default=600, help="cap on dev questions")
    ap.add_argument("--dev_percent", type=int, default=12)
    ap.add_argument("--max_per_family", type=int, default=40,
                    help="cap on contexts per page family (name up to the first _ or -: gcloud_*, git-*, ...)")
    args = ap.parse_args()

    seen_paras, seen_pages = set(), set()
    data = {"train": [], "dev": []}
    counts = collections.Counter()
    kinds = {"train": collections.Counter(), "dev": collections.Counter()}
    for fname in sorted(os.listdir(args.man_dir)):
        if not fname.endswith(".gz"):
            continue
        path = os.path.join(args.man_dir, fname)
        if os.path.islink(path):
            continue
        try:
            raw = gzip.open(path, "rb").read().decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        if raw.lstrip().startswith(".so ") or len(raw) < 200:
            continue
        digest = hashlib.sha1(raw.encode()).hexdigest()
        if digest in seen_pages:
            continue
        seen_pages.add(digest)
        counts["pages"] += 1
        page_name = fname[:-3].rsplit(".", 1)[0]
        split = "dev" if _h(page_name) % 100 < args.dev_percent else "train"
        for section, text in roff_paragraphs(raw):
            text = re.sub(r"\s+", " ", text).strip()
            if section in ("SYNOPSIS", "NAME", "COPYRIGHT", "AUTHOR", "AUTHORS", "REPORTING BUGS", "SEE ALSO"):
                continue
            if not _ok_paragraph(text):
                continue
            key = re.sub(r"\W+", " ", text.lower())
            if key in seen_paras:
                counts["duplicate_paragraphs"] += 1
                continue
            seen_paras.add(key)
            qas = questions_for(text, page_name)
            if not qas:
                continue
            family = re.split(r"[_-]", page_name)[0]
            counts["family:" + family] += 1
            if counts["family:" + family] > args.max_per_family:
                continue
            counts[f"{split}_contexts"] += 1
            data[split].append({"title": page_name, "paragraphs": [{"context": text, "qas": [
                {"id": f"{page_name}-{_h(text):08x}-{i}", "question": q,
                 "answers": [{"text": a, "answer_start": s}]} for i, (q, a, s, _) in enumerate(qas)]}]})
            for _, a, s, k in qas:
                assert text[s:s + len(a)] == a
                kinds[split][k] += 1

    os.makedirs(args.out, exist_ok=True)
    stats = {"pages_read": counts["pages"], "duplicate_paragraphs_dropped": counts["duplicate_paragraphs"]}
    for split, cap in (("train", args.train), ("dev", args.dev)):
        # cap deterministically: keep contexts in order of a hash of their text until the cap is met
        items = sorted(data[split], key=lambda d: _h(d["paragraphs"][0]["context"]))
        kept, n = [], 0
        for d in items:
            if n >= cap:
                break
            kept.append(d)
            n += len(d["paragraphs"][0]["qas"])
        kept.sort(key=lambda d: d["title"])
        kind_counts = collections.Counter()
        for d in kept:
            for qa in d["paragraphs"][0]["qas"]:
                a = qa["answers"][0]["text"]
                kind_counts["option" if a.startswith("-") else "path" if "/" in a else
                            "number" if a[0].isdigit() else "other"] += 1
        with open(os.path.join(args.out, f"{split}.json"), "w") as f:
            json.dump({"version": "1.1", "data": kept}, f, ensure_ascii=False, indent=0)
        stats[split] = {"questions": n, "contexts": len(kept), "pages": len({d["title"] for d in kept}),
                        "context_words_mean": round(sum(len(d["paragraphs"][0]["context"].split()) for d in kept)
                                                    / max(1, len(kept)), 1),
                        "answer_types": dict(kind_counts)}
    overlap = {d["title"] for d in json.load(open(os.path.join(args.out, "train.json")))["data"]} & \
              {d["title"] for d in json.load(open(os.path.join(args.out, "dev.json")))["data"]}
    stats["pages_in_both_splits"] = len(overlap)
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
