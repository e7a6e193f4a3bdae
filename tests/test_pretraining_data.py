"""NSP instances and the Grain pipeline against google-research/bert's rules."""

import numpy as np
import pytest

from bert_jax.config import InputError
from bert_jax.data import pretraining
from bert_jax.data.tokenizer import CLS_ID, PAD_ID, SEP_ID

MAX_SEQ_LENGTH = 48
FEATURE_KEYS = {"input_ids", "segment_ids", "attention_mask", "next_sentence_labels"}


def reference_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """google-research/bert's truncate_seq_pair, verbatim apart from the rng call."""
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_num_tokens:
            break
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc_tokens) >= 1
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


@pytest.mark.parametrize("num_a,num_b,max_num_tokens", [(30, 5, 20), (5, 30, 20), (12, 12, 9), (3, 4, 10),
                                                          (100, 1, 7), (8, 8, 15)])
def test_truncate_seq_pair_matches_reference(num_a, num_b, max_num_tokens):
    for seed in range(5):
        tokens_a, tokens_b = list(range(num_a)), list(range(100, 100 + num_b))
        reference_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, np.random.default_rng(seed))
        keep_a, keep_b = pretraining.truncate_seq_pair(num_a, num_b, max_num_tokens, np.random.default_rng(seed))
        assert list(range(num_a))[keep_a] == tokens_a
        assert list(range(100, 100 + num_b))[keep_b] == tokens_b


def test_index_instances_chunks_every_sentence_once():
    rng = np.random.default_rng(0)
    lengths = [rng.integers(1, 30, size=rng.integers(1, 12)) for _ in range(40)]
    instances = pretraining.index_instances(lengths, 64, 0.3, seed=1)
    assert instances.shape[1] == 4
    np.testing.assert_array_equal(instances, pretraining.index_instances(lengths, 64, 0.3, seed=1))
    for doc, document_lengths in enumerate(lengths):
        rows = instances[instances[:, 0] == doc]
        assert rows[0, 1] == 0 and rows[-1, 2] == len(document_lengths)
        np.testing.assert_array_equal(rows[1:, 1], rows[:-1, 2])  # contiguous, no gaps or overlaps
        for _, first, end, target in rows:
            assert 2 <= target <= 61
            chunk = document_lengths[first:end]
            assert chunk[:-1].sum() < target  # the chunk closed as soon as it reached its target
            assert chunk.sum() >= target or end == len(document_lengths)
    assert (pretraining.index_instances(lengths, 64, 0.0, seed=1)[:, 3] == 61).all()
    assert (pretraining.index_instances(lengths, 64, 1.0, seed=1)[:, 3] < 61).mean() > 0.9


@pytest.fixture(scope="module")
def train_pairs(sources):
    source = sources["train"]
    instances = pretraining.index_instances(pretraining.load_sentence_lengths(source), MAX_SEQ_LENGTH, 0.1, 0)
    pairs = [pretraining.make_sentence_pair(source, chunk, np.random.default_rng([rep, i]), len(source),
                                            MAX_SEQ_LENGTH)
             for rep in range(6) for i, chunk in enumerate(instances)]
    return source, [chunk for _ in range(6) for chunk in instances], pairs


def _split_pair(pair):
    """(A tokens, B tokens) from input_ids, checking the [CLS] A [SEP] B [SEP] layout and masks."""
    ids, segments, mask = pair["input_ids"], pair["segment_ids"], pair["attention_mask"]
    length = int(mask.sum())
    assert ids.shape == segments.shape == mask.shape == (MAX_SEQ_LENGTH,)
    assert ids.dtype == segments.dtype == mask.dtype == np.int32
    assert (mask[:length] == 1).all() and (mask[length:] == 0).all()
    assert (ids[length:] == PAD_ID).all() and (segments[length:] == 0).all()
    seps = np.flatnonzero(ids[:length] == SEP_ID)
    assert ids[0] == CLS_ID and len(seps) == 2 and seps[1] == length - 1
    assert (segments[:seps[0] + 1] == 0).all() and (segments[seps[0] + 1:length] == 1).all()
    assert not np.isin(ids[1:length - 1], [CLS_ID, PAD_ID, 4]).any()
    return ids[1:seps[0]], ids[seps[0] + 1:length - 1]


def _sentence_starts(document):
    return np.concatenate([[0], np.cumsum(document["sentence_lengths"])])


def _is_substring(part, whole):
    return any(np.array_equal(whole[i:i + len(part)], part) for i in range(len(whole) - len(part) + 1))


def test_sentence_pairs_follow_bert_rules(train_pairs):
    source, chunks, pairs = train_pairs
    assert len(pairs) > 300
    multi = [p["next_sentence_labels"] for c, p in zip(chunks, pairs) if c[2] - c[1] >= 2]
    assert len(multi) > 200 and 0.4 < np.mean(multi) < 0.6  # NotNext half the time
    counts = {"untruncated_is_next": 0, "untruncated_not_next": 0, "truncated": 0}
    for (doc, first, end, _), pair in zip(chunks, pairs):
        tokens_a, tokens_b = _split_pair(pair)
        assert len(tokens_a) >= 1 and len(tokens_b) >= 1
        assert len(tokens_a) + len(tokens_b) <= MAX_SEQ_LENGTH - 3
        assert pair["a_doc"] == doc
        document = source[int(doc)]
        starts = _sentence_starts(document)
        chunk_tokens = document["tokens"][starts[first]:starts[end]]
        label = int(pair["next_sentence_labels"])
        if label == pretraining.NOT_NEXT:
            assert pair["b_doc"] != doc
            other = source[int(pair["b_doc"])]
        else:
            assert end - first >= 2 and pair["b_doc"] == doc
        if len(tokens_a) + len(tokens_b) == MAX_SEQ_LENGTH - 3:  # possibly truncated: contiguous pieces
            counts["truncated"] += 1
            assert _is_substring(tokens_a, chunk_tokens)
            assert _is_substring(tokens_b, chunk_tokens if label == pretraining.IS_NEXT else other["tokens"])
            continue
        # Untruncated: A is the chunk's first sentences, B the rest (IsNext) or whole sentences of another doc.
        a_end = starts[first] + len(tokens_a)
        assert a_end in starts[first + 1:end] or (end - first == 1 and a_end == starts[end])
        np.testing.assert_array_equal(tokens_a, chunk_tokens[:len(tokens_a)])
        if label == pretraining.IS_NEXT:
            counts["untruncated_is_next"] += 1
            np.testing.assert_array_equal(tokens_b, chunk_tokens[len(tokens_a):])
        else:
            counts["untruncated_not_next"] += 1
            other_starts = _sentence_starts(other)
            start = int(np.flatnonzero([_is_substring(tokens_b, other["tokens"][s:s + len(tokens_b)])
                                        for s in other_starts[:-1]])[0])
            assert other_starts[start] + len(tokens_b) in other_starts
    assert min(counts.values()) > 10, counts


def _pair_tokens(pair):
    ids = pair["input_ids"]
    seps = np.flatnonzero(ids == SEP_ID)
    return ids[1:seps[0]].tolist(), ids[seps[0] + 1:seps[1]].tolist()


def test_truncation_in_pairs_matches_reference(sources):
    """A short max_seq_length cuts the pair exactly as the reference cuts the uncut pair, rng for rng."""
    source = sources["train"]
    instances = pretraining.index_instances(pretraining.load_sentence_lengths(source), 64, 0.0, 0)
    for i, chunk in enumerate(instances[:100]):
        rng = np.random.default_rng(i)
        uncut = pretraining.make_sentence_pair(source, chunk, rng, len(source), 10_000)
        tokens_a, tokens_b = _pair_tokens(uncut)
        reference_truncate_seq_pair(tokens_a, tokens_b, 9, rng)  # rng continues where the pair left it
        cut = pretraining.make_sentence_pair(source, chunk, np.random.default_rng(i), len(source), 12)
        assert _pair_tokens(cut) == (tokens_a, tokens_b)
        assert len(tokens_a) + len(tokens_b) == 9  # every 61-token-target chunk is longer than 9 tokens


def test_iterator_batches_are_deterministic_and_resumable(sources):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=4, seed=3)
    iterator = pretraining.make_pretraining_iterator(sources["train"], **kwargs)
    batches = [next(iterator) for _ in range(3)]
    assert set(batches[0]) == FEATURE_KEYS
    assert batches[0]["input_ids"].shape == (4, MAX_SEQ_LENGTH) and batches[0]["input_ids"].dtype == np.int32
    assert batches[0]["next_sentence_labels"].shape == (4,)
    assert batches[0]["next_sentence_labels"].dtype == np.int32
    state = iterator.get_state()
    following = next(iterator)

    again = pretraining.make_pretraining_iterator(sources["train"], **kwargs)
    for batch in batches + [following]:
        np.testing.assert_array_equal(next(again)["input_ids"], batch["input_ids"])
    resumed = pretraining.make_pretraining_iterator(sources["train"], **kwargs)
    resumed.set_state(state)
    resumed_batch = next(resumed)
    for key in FEATURE_KEYS:
        np.testing.assert_array_equal(resumed_batch[key], following[key])
    other_seed = pretraining.make_pretraining_iterator(sources["train"], **(kwargs | {"seed": 4}))
    assert not np.array_equal(next(other_seed)["input_ids"], batches[0]["input_ids"])


def _rows(iterator):
    return [tuple(row) for batch in iterator for row in batch["input_ids"].tolist()]


def test_process_shards_are_disjoint_and_complete(sources):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=1, seed=0, num_epochs=1)
    everything = _rows(pretraining.make_pretraining_iterator(sources["train"], **kwargs))
    shards = [_rows(pretraining.make_pretraining_iterator(sources["train"], process_index=i, process_count=3,
                                                          **kwargs)) for i in range(3)]
    num_instances = len(pretraining.index_instances(
        pretraining.load_sentence_lengths(sources["train"]), MAX_SEQ_LENGTH, 0.1, 0))
    assert len(everything) == num_instances == sum(map(len, shards))
    for i, shard in enumerate(shards):
        assert shard == everything[i::3]


def test_epochs_are_reshuffled(sources):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=1, seed=0)
    rows = _rows(pretraining.make_pretraining_iterator(sources["train"], num_epochs=2, **kwargs))
    first, second = rows[:len(rows) // 2], rows[len(rows) // 2:]
    assert first != second
    unshuffled = _rows(pretraining.make_pretraining_iterator(sources["train"], num_epochs=1, shuffle=False,
                                                              **kwargs))
    assert [r[:3] for r in unshuffled[:5]] != [r[:3] for r in first[:5]]


def test_eval_batches_are_fixed_and_weighted(sources):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, batch_size=8, num_examples=1000, seed=0)
    batches = pretraining.make_eval_batches(sources["eval"], **kwargs)
    again = pretraining.make_eval_batches(sources["eval"], **kwargs)
    num_instances = len(pretraining.index_instances(
        pretraining.load_sentence_lengths(sources["eval"]), MAX_SEQ_LENGTH, 0.1, 0))
    assert sum(float(b["example_weights"].sum()) for b in batches) == num_instances < 1000
    assert len(batches) == -(-num_instances // 8)
    for batch, same in zip(batches, again):
        assert set(batch) == FEATURE_KEYS | {"example_weights"}
        assert batch["example_weights"].dtype == np.float32 and batch["input_ids"].shape == (8, MAX_SEQ_LENGTH)
        for key in batch:
            np.testing.assert_array_equal(batch[key], same[key])
    last = batches[-1]
    padding = last["example_weights"] == 0
    assert (last["attention_mask"][padding] == 0).all() and (last["input_ids"][padding] == PAD_ID).all()
    assert (last["attention_mask"][~padding].sum(axis=1) > 0).all()
    few = pretraining.make_eval_batches(sources["eval"], **(kwargs | {"num_examples": 10}))
    assert [float(b["example_weights"].sum()) for b in few] == [8.0, 2.0]


def test_single_document_is_refused(sources):
    with pytest.raises(InputError, match="at least 2 documents"):
        pretraining.make_pretraining_iterator([sources["train"][0]], max_seq_length=MAX_SEQ_LENGTH,
                                              short_seq_prob=0.1, batch_size=2, seed=0)
