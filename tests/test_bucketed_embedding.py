"""Length-bucketed, streamed embedding (bert_jax.embed): the bucketed path gives the fixed-length path's
vectors in input order and compiles once per bucket; a file streamed chunk by chunk into a .npy memmap
equals the in-memory result; a failed or killed stream leaves nothing under the output name.

A tiny random encoder in memory: every test here runs in seconds.
"""

import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
from conftest import _WORDS
from flax import nnx

from bert_jax.config import InputError
from bert_jax.finetuning import buckets, embedding, transfer
from bert_jax.model import encoder

MAX_SEQ_LENGTH = 64
# Word counts spanning the buckets 16, 32 and 64 (and cut at 64), shuffled so input order is not length order.
_WORD_COUNTS = [3, 40, 9, 70, 20, 1, 12, 55, 25, 5, 33, 14, 8, 60, 2, 18, 27, 11, 45, 6, 30, 4, 16]


def _texts(counts=_WORD_COUNTS, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, n)) for n in counts]


@pytest.fixture(scope="module")
def pretrained(small_tokenizer):
    config = encoder.BertConfig(vocab_size=small_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=MAX_SEQ_LENGTH)
    bert = encoder.BertModel(config, add_pooling_layer=False, rngs=nnx.Rngs(3))
    params = {transfer.ENCODER: nnx.to_pure_dict(nnx.state(bert, nnx.Param))}
    model_config = ml_collections.ConfigDict({"model": {k: getattr(config, k) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings")}})
    return transfer.Pretrained(model_config, small_tokenizer, params, "tiny")


@pytest.fixture(scope="module")
def embedders(pretrained):
    """{pooling: (embedder, its stats after its first call)}, built once: each compiles its buckets once."""
    made = {}

    def get(pooling):
        if pooling not in made:
            embedder = embedding.Embedder(pretrained, layers=[-2, -1], pooling=pooling, normalize=pooling == "mean")
            embedder(_texts(), max_seq_length=MAX_SEQ_LENGTH, batch_size=4)
            made[pooling] = embedder, dataclasses.replace(embedder.stats, buckets=set(embedder.stats.buckets))
        return made[pooling][0]

    get.first_stats = lambda pooling: made[pooling][1]
    return get


@pytest.mark.parametrize("pooling", ["mean", "tokens"])
def test_bucketed_equals_fixed_length_in_input_order(embedders, pooling):
    embedder, texts = embedders(pooling), _texts()
    bucketed = embedder(texts, max_seq_length=MAX_SEQ_LENGTH, batch_size=4)
    fixed = embedder(texts, max_seq_length=MAX_SEQ_LENGTH, batch_size=4, bucketed=False)
    assert bucketed.shape == fixed.shape == embedder.output_shape(len(texts), MAX_SEQ_LENGTH)
    np.testing.assert_allclose(bucketed, fixed, atol=2e-6, rtol=0)
    reversed_ = embedder(texts[::-1], max_seq_length=MAX_SEQ_LENGTH, batch_size=4)
    np.testing.assert_allclose(reversed_[::-1], bucketed, atol=2e-6, rtol=0)  # row i is text i, whatever the order
    assert not np.allclose(bucketed[0], bucketed[1], atol=1e-3)
    if pooling == "mean":  # --normalize
        np.testing.assert_allclose(np.linalg.norm(bucketed, axis=-1), 1.0, atol=1e-6)
    else:
        lengths = [min(len(ids), MAX_SEQ_LENGTH - 2) + 2
                   for ids in map(embedder.tokenizer.encode, texts)]
        assert all(not row[n:].any() and row[n - 1].any() for row, n in zip(bucketed, lengths))


def test_one_compile_per_bucket_reused_across_calls(embedders):
    embedder, texts = embedders("mean"), _texts()
    first = embedders.first_stats("mean")
    lengths = sorted(min(len(ids), MAX_SEQ_LENGTH - 2) + 2 for ids in map(embedder.tokenizer.encode, texts))
    used = {buckets.bucket_length(max(lengths[i:i + 4]), MAX_SEQ_LENGTH) for i in range(0, len(lengths), 4)}
    assert first.buckets == used == {16, 32, 64}
    assert first.compiles == len(used)
    embedder(list(reversed(texts)), max_seq_length=MAX_SEQ_LENGTH, batch_size=4)  # same buckets: no compile
    assert embedder.stats.compiles == len(used) == embedder._embed._cache_size()
    report = first.report()
    assert report["padding_fraction"] < report["padding_fraction_unbucketed"] - 0.2


def _write_lines(path, texts):
    with open(path, "w", encoding="utf-8") as f:  # blank lines are skipped, as they always were
        f.writelines(f"  {text}\n" + ("\n" if i % 5 == 0 else "") for i, text in enumerate(texts))


@pytest.mark.parametrize("pooling", ["mean", "tokens"])
def test_streamed_memmap_equals_in_memory_and_chunks_bound_memory(embedders, tmp_path, pooling, monkeypatch):
    embedder = embedders(pooling)
    texts = _texts(_WORD_COUNTS * 2, seed=1)
    _write_lines(tmp_path / "lines.txt", texts)
    expected = embedder(texts, max_seq_length=MAX_SEQ_LENGTH, batch_size=4)
    seen = []
    embed_into = embedder.embed_into
    monkeypatch.setattr(embedder, "embed_into", lambda out, chunk, **kw: (seen.append(len(chunk)),
                                                                         embed_into(out, chunk, **kw)))
    report = embedding.embed_file(embedder, str(tmp_path / "lines.txt"), str(tmp_path / "emb.npy"),
                                  max_seq_length=MAX_SEQ_LENGTH, batch_size=4, chunk_lines=10, log_every=7)
    streamed = np.load(tmp_path / "emb.npy")
    assert streamed.shape == expected.shape and report["lines"] == len(texts) == sum(seen)
    assert max(seen) == 10  # the embedder never holds more than one chunk of lines
    np.testing.assert_allclose(streamed, expected, atol=2e-6, rtol=0)
    assert sorted(os.listdir(tmp_path)) == ["emb.npy", "lines.txt"]  # no temporary left


def test_failed_stream_leaves_nothing_under_the_output_name(embedders, tmp_path, monkeypatch):
    embedder = embedders("mean")
    _write_lines(tmp_path / "lines.txt", _texts())
    calls = []

    def fail_on_second_chunk(out, chunk, **kw):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        out[:] = 1.0

    monkeypatch.setattr(embedder, "embed_into", fail_on_second_chunk)
    with pytest.raises(OSError, match="No space left"):
        embedding.embed_file(embedder, str(tmp_path / "lines.txt"), str(tmp_path / "emb.npy"),
                             max_seq_length=MAX_SEQ_LENGTH, chunk_lines=8)
    assert sorted(os.listdir(tmp_path)) == ["lines.txt"]
    (tmp_path / "old.npy").write_bytes(b"an earlier result")  # an existing output stays as it was
    calls.clear()
    with pytest.raises(OSError):
        embedding.embed_file(embedder, str(tmp_path / "lines.txt"), str(tmp_path / "old.npy"),
                             max_seq_length=MAX_SEQ_LENGTH, chunk_lines=8)
    assert (tmp_path / "old.npy").read_bytes() == b"an earlier result"
    assert sorted(os.listdir(tmp_path)) == ["lines.txt", "old.npy"]
    with pytest.raises(InputError, match="no text to embed"):
        (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
        embedding.embed_file(embedder, str(tmp_path / "blank.txt"), str(tmp_path / "emb.npy"),
                             max_seq_length=MAX_SEQ_LENGTH)
    assert not (tmp_path / "emb.npy").exists()


_KILLED_RUN = textwrap.dedent("""
    import os, pickle, signal, sys
    from bert_jax.finetuning import embedding
    with open(sys.argv[1], "rb") as f:
        embedder = embedding.Embedder(pickle.load(f), layers=[-2, -1], pooling="mean", normalize=True)
    def killed_mid_write(out, chunk, **kw):  # the .npy exists, at its full size, with nothing in it yet
        out[:] = 1.0
        os.kill(os.getpid(), signal.SIGKILL)
    embedder.embed_into = killed_mid_write
    embedding.embed_file(embedder, sys.argv[2], sys.argv[3], max_seq_length=64, batch_size=4, chunk_lines=8)
""")


def test_killed_stream_leaves_no_file_under_the_output_name(pretrained, embedders, tmp_path):
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump(pretrained, f)
    _write_lines(tmp_path / "lines.txt", _texts())
    output = tmp_path / "out" / "emb.npy"
    output.parent.mkdir()
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(tmp_path / "model.pkl"),
                             str(tmp_path / "lines.txt"), str(output)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = os.listdir(output.parent)
    assert len(left) == 1 and left[0].startswith(".emb.npy.") and "emb.npy" not in left  # only the hidden temporary
    embedder = embedders("mean")
    embedding.embed_file(embedder, str(tmp_path / "lines.txt"), str(output), max_seq_length=64, batch_size=4)
    assert os.listdir(output.parent) == ["emb.npy"]  # the next run cleared the leftover
    np.testing.assert_allclose(np.load(output), embedder(_texts(), max_seq_length=64, batch_size=4), atol=2e-6,
                               rtol=0)


def test_bad_settings_refused_in_one_line(pretrained, embedders, tmp_path):
    with pytest.raises(InputError, match="normalize L2-normalises one vector per line"):
        embedding.Embedder(pretrained, pooling="tokens", normalize=True)
    with pytest.raises(InputError, match="dtype one of"):
        embedding.Embedder(pretrained, dtype="float16")
    embedder = embedders("mean")
    _write_lines(tmp_path / "lines.txt", _texts()[:3])
    with pytest.raises(InputError, match="the directory .*missing does not exist"):
        embedding.embed_file(embedder, str(tmp_path / "lines.txt"), str(tmp_path / "missing" / "emb.npy"),
                             max_seq_length=MAX_SEQ_LENGTH)
    with pytest.raises(InputError, match="chunk_lines=0 reads nothing"):
        embedding.embed_file(embedder, str(tmp_path / "lines.txt"), str(tmp_path / "emb.npy"),
                             max_seq_length=MAX_SEQ_LENGTH, chunk_lines=0)
