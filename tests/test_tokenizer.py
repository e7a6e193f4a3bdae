"""SentencePiece training and loading: special ids, round trips, word starts and bad input."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from bert_jax.config import InputError
from bert_jax.data import tokenizer
from bert_jax.data.corpus import read_documents


def test_special_tokens_have_fixed_ids(small_tokenizer):
    assert tokenizer.SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    for token_id, piece in enumerate(tokenizer.SPECIAL_TOKENS):
        assert small_tokenizer.id_to_piece(token_id) == piece
    assert (tokenizer.PAD_ID, tokenizer.UNK_ID, tokenizer.CLS_ID, tokenizer.SEP_ID, tokenizer.MASK_ID) == (0, 1, 2, 3, 4)
    # Control symbols are never produced from text, even from their own spelling.
    ids = small_tokenizer.encode("[CLS] the king [SEP] [MASK] [PAD]")
    assert not {0, 2, 3, 4} & set(ids)


def test_vocab_size_and_round_trip(small_tokenizer, corpus_file):
    assert 100 < small_tokenizer.vocab_size <= 300
    sentences = [s for doc in read_documents([corpus_file]) for s in doc][:50]
    batch = small_tokenizer.encode_batch(sentences)
    assert batch == [small_tokenizer.encode(s) for s in sentences]
    for sentence, ids in zip(sentences, batch):
        assert ids and all(5 <= i < small_tokenizer.vocab_size for i in ids)
        assert small_tokenizer.decode(ids) == sentence


def test_word_start_table_marks_boundary_pieces(small_tokenizer):
    table = small_tokenizer.word_start_table()
    assert table.shape == (small_tokenizer.vocab_size,) and table.dtype == np.bool_
    assert table[:5].all()  # special tokens start words
    for i in range(5, small_tokenizer.vocab_size):
        assert table[i] == small_tokenizer.id_to_piece(i).startswith("\u2581"), small_tokenizer.id_to_piece(i)
    assert table.sum() > 10 and (~table).sum() > 10  # both word starts and continuations exist
    ids = small_tokenizer.encode("merchant merchants")
    assert table[ids[0]]


def test_training_is_deterministic_and_allows_large_requested_vocab(corpus_file, tmp_path):
    paths = [tokenizer.train_tokenizer([corpus_file], str(tmp_path / "spm"), 5000) for _ in range(2)]
    first = tokenizer.load_tokenizer(paths[0])
    model_bytes = open(paths[0], "rb").read()
    assert tokenizer.load_tokenizer(tokenizer.train_tokenizer([corpus_file], str(tmp_path / "spm"), 5000)) \
        .serialized_model() == model_bytes
    assert 100 < first.vocab_size < 5000  # the small corpus cannot support 5000 pieces; no error


def test_tokenizer_pickles(small_tokenizer):
    clone = pickle.loads(pickle.dumps(small_tokenizer))
    assert clone.model_path == small_tokenizer.model_path
    assert clone.encode("the old castle") == small_tokenizer.encode("the old castle")


def test_bad_inputs_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        tokenizer.train_tokenizer([str(tmp_path / "missing.txt")], str(tmp_path / "spm"), 300)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(InputError, match="no text"):
        tokenizer.train_tokenizer([str(empty)], str(tmp_path / "spm"), 300)
    with pytest.raises(InputError, match="missing.model"):
        tokenizer.load_tokenizer(str(tmp_path / "missing.model"))
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="not a SentencePiece model"):
        tokenizer.load_tokenizer(str(garbage))


def test_foreign_model_is_refused(corpus_file, tmp_path):
    # SentencePiece's defaults put <unk>, <s>, </s> at ids 0-2: not ours.
    spm.SentencePieceTrainer.train(input=corpus_file, model_prefix=str(tmp_path / "plain"), vocab_size=200,
                                   minloglevel=2)
    with pytest.raises(InputError, match="not trained by bert_jax"):
        tokenizer.load_tokenizer(str(tmp_path / "plain.model"))


def test_command_line(corpus_file, tmp_path):
    command = [sys.executable, "-m", "bert_jax.data.tokenizer", f"--input={corpus_file}",
               "--vocab_size=250", f"--output={tmp_path / 'cli'}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert done.stdout.strip().startswith(f"{tmp_path / 'cli'}.model vocab_size=")
    assert tokenizer.load_tokenizer(str(tmp_path / "cli.model")).vocab_size <= 250

    command[3] = f"--input={tmp_path / 'nothing_here'}"
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1].startswith("error: no text files match")
