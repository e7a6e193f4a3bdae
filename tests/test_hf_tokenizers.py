"""RoBERTa's byte-level BPE and ALBERT's SentencePiece, checked against transformers' own tokenizers.

Both vocabularies are trained here (no network): a byte-level BPE with `tokenizers`, and a SentencePiece
model laid out like ALBERT's spiece.model (<pad> <unk> [CLS] [SEP] [MASK] at 0..4, ALBERT's user symbols).
Needs the [hf] extra.
"""

import json
import os
import pickle
import random
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

from bert_jax.config import InputError
from bert_jax.data import hf_tokenizers, sentencepiece_tokenizer, tokenizer_factory, vocab
from bert_jax.hf import convert as hf_convert
from bert_jax.hf import files as hf_files
from bert_jax.runtime import checkpoint as checkpoint_lib

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")

_WORDS = ("The quick brown fox jumps over the lazy dog . , ! ? ; : naïve café Über Straße résumé 2024 42 3.14 "
          "isn't it's we'll hello world river Mountain king QUEEN 日本 東京 — £5 €10 x@y.com #tag").split()

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's 2024; we'll see: 3.14 or 42?",
    "  The   naïve café  Über résumé  ",
    "QUEEN Straße in 東京, 日本 — £5 or €10.",
    "Mixed\ttabs\nand newlines, x@y.com #tag",
    "zebra quixotic unseen words 12345",
]

# Around ALBERT's user-defined symbols ( ) - . £ € transformers 5 places '▁' differently from SentencePiece
# (see test_albert_user_symbols_follow_sentencepiece); these sentences have none but a final '.'.
ALBERT_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's 2024; we'll see: 42 or 7?",
    "  The   naïve café  Über résumé  ",
    "QUEEN Straße in 東京, 日本 — 5 or 10 pounds",
    "Mixed\ttabs\nand newlines, x@y #tag",
    "zebra quixotic unseen words 12345 THE QUICK BROWN FOX",
    "``Quoted'' Text",
]


def _generated_lines(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 14))) for _ in range(count)]


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    """vocab.json + merges.txt of a byte-level BPE trained like RoBERTa's (its special tokens, 0..4)."""
    directory = tmp_path_factory.mktemp("roberta")
    trainer = tokenizers.implementations.ByteLevelBPETokenizer()
    trainer.train_from_iterator(_generated_lines(400, seed=0), vocab_size=500, min_frequency=2, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(str(directory))
    return directory


@pytest.fixture(scope="module")
def albert_dir(tmp_path_factory):
    """spiece.model trained with ALBERT's recipe (lower-cased text; pad 0, unk 1, [CLS] [SEP] [MASK] 2-4)."""
    directory = tmp_path_factory.mktemp("albert")
    text = directory / "text.txt"
    text.write_text("\n".join(line.lower() for line in _generated_lines(600, seed=1)) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(directory / "spiece"), model_type="unigram", vocab_size=300,
        hard_vocab_limit=False, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="<pad>", unk_piece="<unk>",
        control_symbols=["[CLS]", "[SEP]", "[MASK]"], user_defined_symbols=["(", ")", '"', "-", ".", "–", "£", "€"],
        character_coverage=1.0, minloglevel=2)
    os.remove(text)
    os.remove(directory / "spiece.vocab")
    return directory


def _albert_prepared(text: str) -> str:
    """AlbertTokenizer's text preparation, written out independently of bert_jax."""
    text = text.replace("``", '"').replace("''", '"')
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.lower()


def test_bpe_ids_and_offsets_match_roberta_tokenizer(roberta_dir):
    ours = hf_files._read_tokenizer(str(roberta_dir))
    theirs = transformers.RobertaTokenizer.from_pretrained(str(roberta_dir))
    assert ours.kind == "bpe" and ours.vocab_size == len(theirs)
    assert ours.special_ids == vocab.SpecialIds(pad=theirs.pad_token_id, unk=theirs.unk_token_id,
                                                        cls=theirs.cls_token_id, sep=theirs.sep_token_id,
                                                        mask=theirs.mask_token_id)
    for text in SENTENCES:
        ids, spans = ours.encode_with_offsets(text)
        assert ids == ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        reference = theirs(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for span, (start, end) in zip(spans, reference):  # HF keeps whitespace-only tokens' whitespace
            assert span == ((end, end) if text[start:end].isspace() else (start, end)), text
        assert ours.decode(ids) == text
    assert ours.encode_batch(SENTENCES) == [ours.encode(t) for t in SENTENCES]


def test_bpe_encode_words_matches_roberta_with_prefix_space(roberta_dir):
    ours = hf_files._read_tokenizer(str(roberta_dir))
    theirs = transformers.RobertaTokenizer.from_pretrained(str(roberta_dir), add_prefix_space=True)
    for words in [t.split() for t in SENTENCES] + [["EU", "rejects", "German", "call", "(", "isn't", ")", "."]]:
        per_word = ours.encode_words(words)
        assert len(per_word) == len(words) and all(per_word)
        expected = theirs(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
        assert [i for ids in per_word for i in ids] == expected, words
        # Only the first word differs from encode(" ".join(words)): it gets a space there too.
        assert ours.encode(" ".join(words)) == ours.encode(words[0]) + [i for ids in per_word[1:] for i in ids]
    assert all(ours.encode_words(["a", "", "\x07", "b"]))  # byte-level: even these get a token ('Ġ')


def test_bpe_tables_pickle_and_checkpoint_form(roberta_dir, tmp_path):
    ours = hf_files._read_tokenizer(str(roberta_dir))
    special, starts = ours.special_table(), ours.word_start_table()
    assert special.shape == starts.shape == (ours.vocab_size,)
    assert sorted(np.flatnonzero(special)) == [0, 1, 2, 3, 4] and starts[:5].all()
    for i in range(5, ours.vocab_size):
        assert starts[i] == ours.id_to_piece(i).startswith("\u0120")
    restored = [pickle.loads(pickle.dumps(ours)),
                tokenizer_factory.tokenizer_from_serialized("bpe", ours.serialized_model()),
                tokenizer_factory.load_tokenizer(_saved(ours, tmp_path / "bpe.json"))]
    for clone in restored:
        assert type(clone) is hf_tokenizers.ByteLevelBPETokenizer and clone.special_ids == ours.special_ids
        assert clone.encode_batch(SENTENCES) == ours.encode_batch(SENTENCES)


def _saved(tokenizer, path) -> str:
    tokenizer.save(str(path))
    return str(path)


def test_bpe_export_round_trip(roberta_dir, tmp_path):
    ours = hf_files._read_tokenizer(str(roberta_dir))
    hf_files._write_tokenizer(str(tmp_path), ours)
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(theirs).__name__.startswith("RobertaTokenizer")
    again = hf_files._read_tokenizer(str(tmp_path))
    for text in SENTENCES:
        assert again.encode(text) == ours.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert theirs("a b")["input_ids"][0] == ours.special_ids.cls and theirs.mask_token_id == ours.special_ids.mask


def test_albert_ids_match_albert_tokenizer(albert_dir):
    ours = hf_files._read_tokenizer(str(albert_dir))  # no tokenizer_config.json: AlbertTokenizer's defaults
    theirs = transformers.AlbertTokenizer.from_pretrained(str(albert_dir))
    assert ours.kind == "sentencepiece" and ours.lowercase and ours.strip_accents
    assert ours.special_ids == vocab.DEFAULT_SPECIAL_IDS
    assert [ours.id_to_piece(i) for i in range(5)] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    for text in ALBERT_SENTENCES:
        ids, spans = ours.encode_with_offsets(text)
        assert ids == ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        assert ours.encode(text) == ours.encode(text.lower())
        for token_id, (start, end) in zip(ids, spans):  # spans point into the original, upper-case text
            if token_id != ours.special_ids.unk:
                piece = ours.id_to_piece(token_id).replace(sentencepiece_tokenizer.WORD_BOUNDARY, "")
                assert _albert_prepared(text[start:end]) == piece, (text, start, end)
    assert ours.encode_batch(SENTENCES) == [ours.encode(t) for t in SENTENCES]


def test_albert_user_symbols_follow_sentencepiece(albert_dir):
    """ALBERT's user-defined symbols ( ) - . £ € split as SentencePiece splits them (the tokenizer the model
    was trained with). transformers 5's AlbertTokenizer treats them as added tokens: a word after one
    starts with '▁' ('-', '▁known', not '-', 'known') and a space before one is dropped ('5', '£', not
    '5', '▁', '£'), so only sentences without them match it."""
    ours = hf_files._read_tokenizer(str(albert_dir))
    reference = spm.SentencePieceProcessor(model_file=str(albert_dir / "spiece.model"))
    for text in SENTENCES + ["Well-known (Very) fast.", "A - B", "x(y) £5 €10 3.14"]:
        assert ours.encode(text) == reference.encode(_albert_prepared(text)), text


def test_albert_tokenizer_config_and_export_round_trip(albert_dir, tmp_path):
    cased_dir = tmp_path / "cased"
    cased_dir.mkdir()
    (cased_dir / "spiece.model").write_bytes((albert_dir / "spiece.model").read_bytes())
    (cased_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "keep_accents": True}))
    cased = hf_files._read_tokenizer(str(cased_dir))
    assert not cased.lowercase and not cased.strip_accents and cased.encode("King") != cased.encode("king")

    ours = hf_files._read_tokenizer(str(albert_dir))
    (tmp_path / "export").mkdir()
    hf_files._write_tokenizer(str(tmp_path / "export"), ours)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    restored = [hf_files._read_tokenizer(str(tmp_path / "export")), pickle.loads(pickle.dumps(ours)),
                tokenizer_factory.tokenizer_from_serialized("sentencepiece", ours.serialized_model())]
    for text in ALBERT_SENTENCES:
        assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
        assert all(clone.encode(text) == ours.encode(text) for clone in restored)
    # The file stays a plain SentencePiece model for SentencePiece itself.
    assert spm.SentencePieceProcessor(model_proto=ours.serialized_model()).get_piece_size() == ours.vocab_size


def test_albert_style_models_without_the_special_pieces_are_refused(albert_dir, tmp_path):
    spm.SentencePieceTrainer.train(input=str(_text_file(tmp_path)), model_prefix=str(tmp_path / "no_mask"),
                                   vocab_size=100, hard_vocab_limit=False, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
                                   pad_piece="<pad>", unk_piece="<unk>", control_symbols=["[CLS]", "[SEP]"],
                                   minloglevel=2)
    with pytest.raises(InputError, match="not trained by bert_jax"):
        tokenizer_factory.load_tokenizer(str(tmp_path / "no_mask.model"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a SentencePiece model"):
        hf_files._read_tokenizer(str(tmp_path / "hf"))
    with pytest.raises(InputError, match="vocab.json"):
        hf_files._read_tokenizer(str(tmp_path))


def _text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("\n".join(_generated_lines(100, seed=2)) + "\n", encoding="utf-8")
    return path


def _tiny_hf_config(cls, tokenizer, **overrides):
    ids = tokenizer.special_ids
    return cls(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, pad_token_id=ids.pad, bos_token_id=ids.cls, eos_token_id=ids.sep, **overrides)


def test_roberta_directory_imports_with_its_tokenizer(roberta_dir, tmp_path):
    tokenizer = hf_files._read_tokenizer(str(roberta_dir))
    config = _tiny_hf_config(transformers.RobertaConfig, tokenizer, max_position_embeddings=66, type_vocab_size=1)
    torch.manual_seed(0)
    transformers.RobertaForMaskedLM(config).save_pretrained(str(tmp_path / "hf"))
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "hf" / name).write_bytes((roberta_dir / name).read_bytes())
    hf_convert.import_hf_directory(str(tmp_path / "hf"), str(tmp_path / "out"))
    _, restored, _ = checkpoint_lib.read_export_info(str(tmp_path / "out"))
    assert restored.kind == "bpe" and restored.special_ids == tokenizer.special_ids
    assert restored.encode_batch(SENTENCES) == tokenizer.encode_batch(SENTENCES)


def test_albert_directory_imports_with_its_tokenizer(albert_dir, tmp_path):
    tokenizer = hf_files._read_tokenizer(str(albert_dir))
    config = _tiny_hf_config(transformers.AlbertConfig, tokenizer, embedding_size=16, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.AlbertForPreTraining(config).save_pretrained(str(tmp_path / "hf"))
    (tmp_path / "hf" / "spiece.model").write_bytes((albert_dir / "spiece.model").read_bytes())
    hf_convert.import_hf_directory(str(tmp_path / "hf"), str(tmp_path / "out"))
    _, restored, _ = checkpoint_lib.read_export_info(str(tmp_path / "out"))
    assert restored.kind == "sentencepiece" and restored.lowercase and restored.strip_accents
    assert restored.encode_batch(SENTENCES) == tokenizer.encode_batch(SENTENCES)
    assert restored.encode("QUEEN Über") == tokenizer.encode("queen uber")


def test_vocabularies_without_the_special_pieces_are_refused(tmp_path):
    vocab = {piece: i for i, piece in enumerate(["<pad>", "<unk>", "<s>", "</s>", "a", "b", "ab"])}  # no <mask>
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"byte-level BPE vocabulary .* lacks \['<mask>'\]; bert_jax needs "
                                         r"RoBERTa's \['<pad>', '<unk>', '<s>', '</s>', '<mask>'\]"):
        hf_tokenizers.ByteLevelBPETokenizer.from_files(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"WordPiece vocabulary .* lacks \['\[MASK\]'\]; BERT needs"):
        hf_tokenizers.WordPieceTokenizer.from_vocab(str(tmp_path / "vocab.txt"))
