"""NSP, SOP and MLM-only instances and the Grain pipeline against the rules of BERT, ALBERT and RoBERTa."""

import numpy as np
import pytest

from bert_jax.config import InputError
from bert_jax.data import full_sentences, mixture, pipeline
from bert_jax.data.vocab import CLS_ID, PAD_ID, SEP_ID

MAX_SEQ_LENGTH = 48
FEATURE_KEYS = {"input_ids", "segment_ids", "attention_mask", "next_sentence_labels", "mask_seeds"}


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
        keep_a, keep_b = pipeline.truncate_seq_pair(num_a, num_b, max_num_tokens, np.random.default_rng(seed))
        assert list(range(num_a))[keep_a] == tokens_a
        assert list(range(100, 100 + num_b))[keep_b] == tokens_b


def test_index_instances_chunks_every_sentence_once():
    rng = np.random.default_rng(0)
    lengths = [rng.integers(1, 30, size=rng.integers(1, 12)) for _ in range(40)]
    instances = pipeline.index_instances(lengths, 64, 0.3, seed=1)
    assert instances.shape[1] == 4
    np.testing.assert_array_equal(instances, pipeline.index_instances(lengths, 64, 0.3, seed=1))
    for doc, document_lengths in enumerate(lengths):
        rows = instances[instances[:, 0] == doc]
        assert rows[0, 1] == 0 and rows[-1, 2] == len(document_lengths)
        np.testing.assert_array_equal(rows[1:, 1], rows[:-1, 2])  # contiguous, no gaps or overlaps
        for _, first, end, target in rows:
            assert 2 <= target <= 61
            chunk = document_lengths[first:end]
            assert chunk[:-1].sum() < target  # the chunk closed as soon as it reached its target
            assert chunk.sum() >= target or end == len(document_lengths)
    assert (pipeline.index_instances(lengths, 64, 0.0, seed=1)[:, 3] == 61).all()
    assert (pipeline.index_instances(lengths, 64, 1.0, seed=1)[:, 3] < 61).mean() > 0.9


@pytest.fixture(scope="module")
def train_pairs(sources):
    source = sources["train"]
    instances = pipeline.index_instances(pipeline.load_sentence_lengths(source), MAX_SEQ_LENGTH, 0.1, 0)
    pairs = [pipeline.make_sentence_pair(source, chunk, np.random.default_rng([rep, i]), len(source),
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
        if label == pipeline.NOT_NEXT:
            assert pair["b_doc"] != doc
            other = source[int(pair["b_doc"])]
        else:
            assert end - first >= 2 and pair["b_doc"] == doc
        if len(tokens_a) + len(tokens_b) == MAX_SEQ_LENGTH - 3:  # possibly truncated: contiguous pieces
            counts["truncated"] += 1
            assert _is_substring(tokens_a, chunk_tokens)
            assert _is_substring(tokens_b, chunk_tokens if label == pipeline.IS_NEXT else other["tokens"])
            continue
        # Untruncated: A is the chunk's first sentences, B the rest (IsNext) or whole sentences of another doc.
        a_end = starts[first] + len(tokens_a)
        assert a_end in starts[first + 1:end] or (end - first == 1 and a_end == starts[end])
        np.testing.assert_array_equal(tokens_a, chunk_tokens[:len(tokens_a)])
        if label == pipeline.IS_NEXT:
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
    instances = pipeline.index_instances(pipeline.load_sentence_lengths(source), 64, 0.0, 0)
    for i, chunk in enumerate(instances[:100]):
        rng = np.random.default_rng(i)
        uncut = pipeline.make_sentence_pair(source, chunk, rng, len(source), 10_000)
        tokens_a, tokens_b = _pair_tokens(uncut)
        reference_truncate_seq_pair(tokens_a, tokens_b, 9, rng)  # rng continues where the pair left it
        cut = pipeline.make_sentence_pair(source, chunk, np.random.default_rng(i), len(source), 12)
        assert _pair_tokens(cut) == (tokens_a, tokens_b)
        assert len(tokens_a) + len(tokens_b) == 9  # every 61-token-target chunk is longer than 9 tokens


@pytest.mark.parametrize("options", [
    {},
    dict(objective="mlm_sop", dynamic_masking=False, dupe_factor=3),
    dict(objective="mlm", instance_format="full_sentences"),
    dict(objective="mlm", instance_format="sentence_pairs", dynamic_masking=False),
], ids=["nsp", "sop_static", "mlm_full_sentences", "mlm_static"])
def test_iterator_batches_are_deterministic_and_resumable(sources, options):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=4, seed=3) | options
    iterator = pipeline.make_pretraining_iterator(sources["train"], **kwargs)
    batches = [next(iterator) for _ in range(3)]
    assert set(batches[0]) == FEATURE_KEYS
    assert batches[0]["input_ids"].shape == (4, MAX_SEQ_LENGTH) and batches[0]["input_ids"].dtype == np.int32
    assert batches[0]["next_sentence_labels"].shape == (4,)
    assert batches[0]["next_sentence_labels"].dtype == np.int32
    assert batches[0]["mask_seeds"].shape == (4,) and batches[0]["mask_seeds"].dtype == np.int32
    state = iterator.get_state()
    following = next(iterator)

    again = pipeline.make_pretraining_iterator(sources["train"], **kwargs)
    for batch in batches + [following]:
        again_batch = next(again)
        for key in FEATURE_KEYS:
            np.testing.assert_array_equal(again_batch[key], batch[key])
    resumed = pipeline.make_pretraining_iterator(sources["train"], **kwargs)
    resumed.set_state(state)
    resumed_batch = next(resumed)
    for key in FEATURE_KEYS:
        np.testing.assert_array_equal(resumed_batch[key], following[key])
    other_seed = pipeline.make_pretraining_iterator(sources["train"], **(kwargs | {"seed": 4}))
    assert not np.array_equal(next(other_seed)["input_ids"], batches[0]["input_ids"])


def _rows(iterator):
    return [tuple(row) for batch in iterator for row in batch["input_ids"].tolist()]


def test_process_shards_are_disjoint_and_complete(sources):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=1, seed=0, num_epochs=1)
    everything = _rows(pipeline.make_pretraining_iterator(sources["train"], **kwargs))
    shards = [_rows(pipeline.make_pretraining_iterator(sources["train"], process_index=i, process_count=3,
                                                          **kwargs)) for i in range(3)]
    num_instances = len(pipeline.index_instances(
        pipeline.load_sentence_lengths(sources["train"]), MAX_SEQ_LENGTH, 0.1, 0))
    assert len(everything) == num_instances == sum(map(len, shards))
    for i, shard in enumerate(shards):
        assert shard == everything[i::3]


def test_processes_assemble_the_single_process_batches(sources):
    """With 2 processes x 3 rows, the processes' parts, in process order, are the 1-process batch of 6."""
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, seed=0, num_epochs=1)
    single = pipeline.make_pretraining_iterator(sources["train"], batch_size=6, **kwargs)
    parts = [pipeline.make_pretraining_iterator(sources["train"], batch_size=3, process_index=i, process_count=2,
                                                   **kwargs) for i in range(2)]
    for _ in range(4):
        whole, first, second = next(single), next(parts[0]), next(parts[1])
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]))


def test_epochs_are_reshuffled(sources):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=1, seed=0)
    rows = _rows(pipeline.make_pretraining_iterator(sources["train"], num_epochs=2, **kwargs))
    first, second = rows[:len(rows) // 2], rows[len(rows) // 2:]
    assert first != second
    unshuffled = _rows(pipeline.make_pretraining_iterator(sources["train"], num_epochs=1, shuffle=False,
                                                              **kwargs))
    assert [r[:3] for r in unshuffled[:5]] != [r[:3] for r in first[:5]]


def test_eval_batches_are_fixed_and_weighted(sources):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, batch_size=8, num_examples=1000, seed=0)
    batches = pipeline.make_eval_batches(sources["eval"], **kwargs)
    again = pipeline.make_eval_batches(sources["eval"], **kwargs)
    num_instances = len(pipeline.index_instances(
        pipeline.load_sentence_lengths(sources["eval"]), MAX_SEQ_LENGTH, 0.1, 0))
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
    few = pipeline.make_eval_batches(sources["eval"], **(kwargs | {"num_examples": 10}))
    assert [float(b["example_weights"].sum()) for b in few] == [8.0, 2.0]


def test_single_document_is_refused(sources):
    with pytest.raises(InputError, match="at least 2 documents"):
        pipeline.make_pretraining_iterator([sources["train"][0]], max_seq_length=MAX_SEQ_LENGTH,
                                              short_seq_prob=0.1, batch_size=2, seed=0)


# ------------------------------------------------------------------ ALBERT: sentence-order prediction

class _ForcedCoin:
    """An rng whose coin flips (scalar `random()`) all come out `coin`; every other draw comes from `rng`."""

    def __init__(self, rng, coin):
        self._rng, self._coin = rng, coin

    def random(self, size=None):
        return self._coin if size is None else self._rng.random(size)

    def integers(self, *args, **kwargs):
        return self._rng.integers(*args, **kwargs)


def _chunk_tokens(source, chunk):
    document = source[int(chunk[0])]
    starts = _sentence_starts(document)
    return document["tokens"][starts[chunk[1]]:starts[chunk[2]]], starts[chunk[1]:chunk[2] + 1] - starts[chunk[1]]


def test_sop_negative_is_the_swapped_positive(sources):
    """Same chunk, same draws, only the swap coin differs: the same two segments, B then A."""
    source = sources["train"]
    instances = pipeline.index_instances(pipeline.load_sentence_lengths(source), MAX_SEQ_LENGTH, 0.3, 0)
    for i, chunk in enumerate(instances):
        make = lambda coin: pipeline.make_sentence_pair(  # noqa: E731
            source, chunk, _ForcedCoin(np.random.default_rng(i), coin), len(source), MAX_SEQ_LENGTH, "mlm_sop")
        in_order, swapped = make(0.9), make(0.1)
        assert in_order["next_sentence_labels"] == pipeline.IN_ORDER
        assert swapped["next_sentence_labels"] == pipeline.SWAPPED
        tokens_a, tokens_b = _split_pair(in_order)  # also checks segment ids follow the order shown
        swapped_first, swapped_second = _split_pair(swapped)
        np.testing.assert_array_equal(swapped_first, tokens_b)
        np.testing.assert_array_equal(swapped_second, tokens_a)
        assert in_order["a_doc"] == in_order["b_doc"] == swapped["a_doc"] == swapped["b_doc"] == chunk[0]


def test_sop_pairs_are_two_halves_of_one_chunk(sources):
    source = sources["train"]
    instances = pipeline.index_instances(pipeline.load_sentence_lengths(source), MAX_SEQ_LENGTH, 0.3, 0)
    labels, counts = [], {"sentence_split": 0, "inside_sentence_split": 0, "truncated": 0}
    for rep in range(6):
        for i, chunk in enumerate(instances):
            pair = pipeline.make_sentence_pair(source, chunk, np.random.default_rng([rep, i, 7]), len(source),
                                                  MAX_SEQ_LENGTH, "mlm_sop")
            assert pair["a_doc"] == pair["b_doc"] == chunk[0]  # never text of another document
            shown_first, shown_second = _split_pair(pair)
            assert len(shown_first) >= 1 and len(shown_second) >= 1
            label = int(pair["next_sentence_labels"])
            labels.append(label)
            earlier, later = shown_first, shown_second
            if label == pipeline.SWAPPED:
                earlier, later = later, earlier
            chunk_tokens, sentence_starts = _chunk_tokens(source, chunk)
            if len(earlier) + len(later) < MAX_SEQ_LENGTH - 3:  # untruncated: the chunk cut in two
                np.testing.assert_array_equal(np.concatenate([earlier, later]), chunk_tokens)
                if len(sentence_starts) > 2:
                    assert len(earlier) in sentence_starts[1:-1]  # at a sentence boundary
                    counts["sentence_split"] += 1
                else:
                    counts["inside_sentence_split"] += 1
            else:  # truncated: each side a piece of its half, in document order
                counts["truncated"] += 1
                first_at = next(s for s in range(len(chunk_tokens))
                                if np.array_equal(chunk_tokens[s:s + len(earlier)], earlier))
                assert _is_substring(later, chunk_tokens[first_at + len(earlier):])
    assert 0.4 < np.mean(labels) < 0.6  # swapped half of the time
    assert min(counts.values()) > 10, counts


# ------------------------------------------------------------------ RoBERTa: MLM only

def test_mlm_instances_have_one_segment_and_no_pair_labels(sources):
    source = sources["train"]
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=1, seed=0, num_epochs=1,
                  shuffle=False, objective="mlm")
    rows = list(pipeline.make_pretraining_iterator(source, **kwargs))
    instances = pipeline.index_instances(pipeline.load_sentence_lengths(source), MAX_SEQ_LENGTH, 0.1, 0,
                                            num_special_tokens=2)
    assert len(rows) == len(instances)
    num_untruncated = 0
    for row, chunk in zip(rows, instances):
        ids, segments, mask = row["input_ids"][0], row["segment_ids"][0], row["attention_mask"][0]
        length = int(mask.sum())
        assert row["next_sentence_labels"][0] == 0 and (segments == 0).all()
        assert ids[0] == CLS_ID and np.flatnonzero(ids == SEP_ID).tolist() == [length - 1]
        assert (mask[:length] == 1).all() and (ids[length:] == PAD_ID).all()
        chunk_tokens, _ = _chunk_tokens(source, chunk)
        body = ids[1:length - 1]
        if len(chunk_tokens) <= MAX_SEQ_LENGTH - 2:
            num_untruncated += 1
            np.testing.assert_array_equal(body, chunk_tokens)
        else:
            assert len(body) == MAX_SEQ_LENGTH - 2 and _is_substring(body, chunk_tokens)
    assert num_untruncated > 10


# ------------------------------------------------------------------ RoBERTa: FULL-SENTENCES packing

def test_index_packs_by_hand():
    lengths = [np.array([3, 4]), np.array([5])]
    # 7 tokens, then a boundary [SEP] + 5 overflows 10 tokens of room; fits in 14.
    np.testing.assert_array_equal(full_sentences.index_packs(lengths, 12), [[0, 0, 0, 7], [1, 0, 1, 5]])
    np.testing.assert_array_equal(full_sentences.index_packs(lengths, 16), [[0, 0, 1, 5]])
    # An over-long sentence fills whole packs; its rest is followed by the next sentence.
    np.testing.assert_array_equal(full_sentences.index_packs([np.array([25, 4])], 12),
                                  [[0, 0, 0, 10], [0, 10, 0, 20], [0, 20, 0, 29]])


def _check_packs_rebuild_the_stream(source, rows, max_seq_length):
    """Walks the split's documents along the packs: returns the number of packs that cut a sentence."""
    documents = [source[d] for d in range(len(source))]
    doc, offset, cut_sentences = 0, 0, 0
    for p, row in enumerate(rows):
        ids, segments, mask = row["input_ids"], row["segment_ids"], row["attention_mask"]
        length = int(mask.sum())
        assert length <= max_seq_length and (mask[:length] == 1).all() and (ids[length:] == PAD_ID).all()
        assert (segments == 0).all() and row["next_sentence_labels"] == 0
        assert ids[0] == CLS_ID and ids[length - 1] == SEP_ID
        if offset == len(documents[doc]["tokens"]):  # the previous pack ended with its document
            doc, offset = doc + 1, 0
        starts = _sentence_starts(documents[doc])
        if offset not in starts:
            assert int(rows[p - 1]["attention_mask"].sum()) == max_seq_length  # only a full pack cuts a sentence
            cut_sentences += 1
        elif p and length < max_seq_length:
            # Greedy: the previous pack's padding had no room for this pack's first sentence.
            next_cost = int(np.diff(starts)[list(starts).index(offset)]) + (offset == 0)
            assert max_seq_length - int(rows[p - 1]["attention_mask"].sum()) < next_cost
        body = ids[1:length - 1]  # without [CLS] and the final [SEP]
        for k, part in enumerate(np.split(body, np.flatnonzero(body == SEP_ID))):
            if k:  # a [SEP] inside the pack: the previous document ended right there
                assert part[0] == SEP_ID and offset == len(documents[doc]["tokens"])
                doc, offset, part = doc + 1, 0, part[1:]
            assert len(part) >= 1
            np.testing.assert_array_equal(part, documents[doc]["tokens"][offset:offset + len(part)])
            offset += len(part)
    assert doc == len(documents) - 1 and offset == len(documents[-1]["tokens"])  # nothing dropped
    return cut_sentences


@pytest.mark.parametrize("max_seq_length", [16, MAX_SEQ_LENGTH, 256])
def test_full_sentences_packs_are_the_stream_in_order(sources, max_seq_length):
    source = sources["train"]
    kwargs = dict(max_seq_length=max_seq_length, short_seq_prob=0.1, batch_size=1, seed=0, num_epochs=1,
                  shuffle=False, objective="mlm", instance_format="full_sentences")
    rows = [{key: value[0] for key, value in batch.items()}
            for batch in pipeline.make_pretraining_iterator(source, **kwargs)]
    cut_sentences = _check_packs_rebuild_the_stream(source, rows, max_seq_length)
    lengths = np.concatenate(pipeline.load_sentence_lengths(source))
    assert (cut_sentences > 0) == (lengths.max() > max_seq_length - 2)  # 16 cuts the longest sentences
    if max_seq_length == 256:  # ~15 packs of ~20 sentences: padding is a part of one sentence per pack
        assert pipeline.padding_fraction(
            pipeline.make_pretraining_iterator(source, **(kwargs | dict(batch_size=4)))) < 0.05


@pytest.mark.parametrize("objective", ["mlm_nsp", "mlm_sop"])
def test_full_sentences_need_the_mlm_objective(sources, objective):
    with pytest.raises(InputError, match="config.data.instance_format.*config.objective"):
        pipeline.make_pretraining_iterator(sources["train"], max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1,
                                              batch_size=2, seed=0, objective=objective,
                                              instance_format="full_sentences")
    with pytest.raises(InputError, match="config.data.instance_format.*config.objective"):
        pipeline.make_eval_batches(sources["eval"], max_seq_length=MAX_SEQ_LENGTH, batch_size=2, num_examples=4,
                                      objective=objective, instance_format="full_sentences")
    with pytest.raises(InputError, match="config.objective='mlm_xyz'"):
        pipeline.make_pretraining_iterator(sources["train"], max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1,
                                              batch_size=2, seed=0, objective="mlm_xyz")


def test_padding_fraction():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pipeline.padding_fraction([{"attention_mask": mask}, {"attention_mask": mask[1:]}]) == 2 / 12


# ------------------------------------------------------------------ static and dynamic masking

def _epochs(sources, num_epochs, **options):
    """{mask_seed: (input_ids, segment_ids, next_sentence_label)} per epoch, and each epoch's seed order."""
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=1, seed=5, num_epochs=num_epochs)
    rows = list(pipeline.make_pretraining_iterator(sources["train"], **(kwargs | options)))
    num_instances = len(rows) // num_epochs
    epochs = []
    for e in range(num_epochs):
        epoch = rows[e * num_instances:(e + 1) * num_instances]
        epochs.append({int(r["mask_seeds"][0]): (r["input_ids"][0].tolist(), r["segment_ids"][0].tolist(),
                                                 int(r["next_sentence_labels"][0])) for r in epoch})
        assert len(epochs[-1]) == num_instances  # one seed per instance
    order = [[int(r["mask_seeds"][0]) for r in rows[e * num_instances:(e + 1) * num_instances]]
             for e in range(num_epochs)]
    return epochs, order, num_instances


@pytest.mark.parametrize("objective", ["mlm_nsp", "mlm_sop"])
def test_static_masking_repeats_every_dupe_factor_epochs(sources, objective):
    epochs, order, num_instances = _epochs(sources, 5, objective=objective, dynamic_masking=False, dupe_factor=2)
    for e in range(5):  # the seed is the hash of (seed, instance, epoch mod dupe_factor)
        assert set(epochs[e]) == {int(pipeline.mask_seed(5, i, e % 2)) for i in range(num_instances)}
    assert epochs[0] == epochs[2] == epochs[4] and epochs[1] == epochs[3]  # same seed, same content
    assert order[0] != order[2]  # though visited in another order: content does not depend on position
    assert not set(epochs[0]) & set(epochs[1])
    changed = [epochs[0][pipeline.mask_seed(5, i, 0)] != epochs[1][pipeline.mask_seed(5, i, 1)]
               for i in range(num_instances)]
    assert np.mean(changed) > 0.5  # a new copy: new split, partner, swap or truncation


def test_dynamic_masking_gives_new_seeds_every_epoch(sources):
    epochs, _, num_instances = _epochs(sources, 3)
    for e in range(3):
        assert set(epochs[e]) == {int(pipeline.mask_seed(5, i, e)) for i in range(num_instances)}
    assert not set(epochs[0]) & set(epochs[2])


def test_eval_mask_seeds_are_fixed_per_instance(sources):
    lengths = pipeline.load_sentence_lengths(sources["eval"])
    for options, num_instances in [
        ({}, len(pipeline.index_instances(lengths, MAX_SEQ_LENGTH, 0.1, 9))),
        (dict(objective="mlm_sop"), len(pipeline.index_instances(lengths, MAX_SEQ_LENGTH, 0.1, 9))),
        (dict(objective="mlm", instance_format="full_sentences"), len(full_sentences.index_packs(lengths, MAX_SEQ_LENGTH))),
    ]:
        batches = pipeline.make_eval_batches(sources["eval"], max_seq_length=MAX_SEQ_LENGTH, batch_size=8,
                                                num_examples=12, seed=9, **options)
        assert set(batches[0]) == FEATURE_KEYS | {"example_weights"}
        seeds = np.concatenate([b["mask_seeds"][b["example_weights"] > 0] for b in batches])
        chosen = np.random.default_rng(9).permutation(num_instances)[:12]  # the instances make_eval_batches picks
        assert seeds.dtype == np.int32
        assert seeds.tolist() == [int(pipeline.mask_seed(9, int(i), 0)) for i in chosen]


def _documents(sentences_per_doc, num_docs=40, sentence_length=6):
    """An in-memory source: documents of `sentences_per_doc` sentences of random real-piece ids."""
    rng = np.random.default_rng(0)
    return [{"tokens": rng.integers(5, 300, size=sentences_per_doc * sentence_length).astype(np.int32),
             "sentence_lengths": np.full(sentences_per_doc, sentence_length, np.int32)} for _ in range(num_docs)]


@pytest.mark.parametrize("sentences_per_doc,warned", [(1, True), (6, False)])
def test_one_sentence_documents_are_reported(sentences_per_doc, warned, caplog):
    """Every chunk of a one-sentence document is NotNext: nsp_acc 1.0 would mean nothing, so the run says so."""
    source = _documents(sentences_per_doc)
    caplog.set_level("INFO")
    iterator = pipeline.make_pretraining_iterator(source, max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.0,
                                                  batch_size=8, seed=0)
    labels = np.concatenate([next(iterator)["next_sentence_labels"] for _ in range(20)])
    index = pipeline.index_instances(pipeline.load_sentence_lengths(source), MAX_SEQ_LENGTH, 0.0, 0)
    expected = pipeline.not_next_fraction(index)
    assert abs(labels.mean() - expected) < 0.1  # the reported figure is what the stream holds
    warnings = [r.getMessage() for r in caplog.records if "of the NSP pairs will be NotNext" in r.getMessage()]
    assert len(warnings) == 1
    assert ("most chunks are a single sentence" in warnings[0]) == warned
    if warned:
        assert expected == 1.0 and labels.mean() == 1.0 and warnings[0].startswith("100%")


# ------------------------------------------------------------------ multilingual: languages sampled by alpha

@pytest.fixture(scope="module")
def language_sources(small_tokenizer, tmp_path_factory):
    """{'train', 'eval'} LanguageSources of three languages of 40, 12 and 4 documents."""
    from conftest import make_documents, write_corpus

    from bert_jax.data import corpus

    root = tmp_path_factory.mktemp("languages")
    spec = ",".join(f"{language}:{write_corpus(root / f'{language}.txt', make_documents(n, seed=10 + n))}"
                    for language, n in (("en", 40), ("ru", 12), ("ja", 4)))
    return corpus.build_corpus(spec, "", 0.2, small_tokenizer, str(root / "tok"))


def _language_sizes(language_sources, **options):
    return [len(pipeline._InstanceBuilder(s, max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, seed=3,
                                          special_ids=pipeline.DEFAULT_SPECIAL_IDS, **options))
            for s in language_sources["train"].sources]


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_languages_get_exactly_their_alpha_share_of_every_epoch(language_sources, dynamic):
    train = language_sources["train"]
    assert train.languages == ("en", "ja", "ru")
    sizes = _language_sizes(language_sources, objective="mlm", instance_format="sentence_pairs")
    counts = mixture.slot_counts(mixture.alpha_weights(sizes, 0.5), sum(sizes))  # the independent expectation
    kwargs = {"max_seq_length": MAX_SEQ_LENGTH, "short_seq_prob": 0.1, "batch_size": 1, "seed": 3,
              "objective": "mlm", "num_epochs": 3, "language_alpha": 0.5, "dynamic_masking": not dynamic,
              "dupe_factor": 2}
    rows = list(pipeline.make_pretraining_iterator(train, **kwargs))
    assert set(rows[0]) == FEATURE_KEYS | {"languages"} and rows[0]["languages"].dtype == np.int32
    languages = np.asarray([int(r["languages"][0]) for r in rows]).reshape(3, sum(sizes))
    for epoch in languages:
        assert np.bincount(epoch, minlength=3).tolist() == counts.tolist()
    assert counts[1] > sizes[1]  # ja, the smallest, is upsampled


def test_a_language_stream_restores_mid_epoch_and_across_processes(language_sources):
    kwargs = {"max_seq_length": MAX_SEQ_LENGTH, "short_seq_prob": 0.1, "seed": 5, "objective": "mlm_nsp"}
    iterator = pipeline.make_pretraining_iterator(language_sources["train"], batch_size=4, **kwargs)
    for _ in range(5):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(30)]  # well into the next epochs
    resumed = pipeline.make_pretraining_iterator(language_sources["train"], batch_size=4, **kwargs)
    resumed.set_state(state)
    moved = pipeline.make_pretraining_iterator(language_sources["train"], batch_size=4, **kwargs)
    assert pipeline.restart_at(moved, 20, pack_sequences=False, batch_size=4) == 20
    for want, got, restarted in zip(expected, (next(resumed) for _ in expected), (next(moved) for _ in expected)):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
            np.testing.assert_array_equal(restarted[key], want[key])
    parts = [pipeline.make_pretraining_iterator(language_sources["train"], batch_size=2, process_index=i,
                                                process_count=2, **kwargs) for i in range(2)]
    whole = pipeline.make_pretraining_iterator(language_sources["train"], batch_size=4, **kwargs)
    for _ in range(3):
        batch, first, second = next(whole), next(parts[0]), next(parts[1])
        np.testing.assert_array_equal(batch["languages"], np.concatenate([first["languages"], second["languages"]]))


def test_nsp_pairs_stay_within_their_language(language_sources, small_tokenizer):
    train = language_sources["train"]
    build = pipeline._language_builders(train, {"max_seq_length": MAX_SEQ_LENGTH, "short_seq_prob": 0.1, "seed": 0,
                                                "objective": "mlm_nsp", "instance_format": "sentence_pairs",
                                                "special_ids": small_tokenizer.special_ids})
    rng = np.random.default_rng(0)
    for language, language_build in enumerate(build.builders):
        for local in range(0, len(language_build), 3):
            row = language_build.index[local]
            pair = pipeline.make_sentence_pair(train.sources[language], row, rng, len(train.sources[language]),
                                               MAX_SEQ_LENGTH)
            assert pair["b_doc"] < len(train.sources[language])
            example = build(int(build.offsets[language]) + local, np.random.default_rng(1))
            assert example["languages"] == language


def test_language_eval_batches_hold_each_language(language_sources):
    kwargs = {"max_seq_length": MAX_SEQ_LENGTH, "batch_size": 8, "num_examples": 6, "seed": 0, "objective": "mlm"}
    batches = pipeline.make_eval_batches(language_sources["eval"], **kwargs)
    assert set(batches[0]) == FEATURE_KEYS | {"example_weights", "languages"}
    languages = np.concatenate([b["languages"] for b in batches])[np.concatenate(
        [b["example_weights"] for b in batches]) > 0]
    sizes = [len(pipeline._InstanceBuilder(s, max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, seed=0,
                                           objective="mlm", instance_format="sentence_pairs",
                                           special_ids=pipeline.DEFAULT_SPECIAL_IDS))
             for s in language_sources["eval"].sources]
    assert np.bincount(languages, minlength=3).tolist() == [min(6, n) for n in sizes]
    again = pipeline.make_eval_batches(language_sources["eval"], **kwargs)
    for batch, same in zip(batches, again):
        for key in batch:
            np.testing.assert_array_equal(batch[key], same[key])
    # ids are the run's: evaluating a run of (de, en, ja, ru) on this text gives en 1, ja 2, ru 3
    run_ids = pipeline.make_eval_batches(language_sources["eval"], language_ids=("de", "en", "ja", "ru"), **kwargs)
    np.testing.assert_array_equal(run_ids[0]["languages"][:3], batches[0]["languages"][:3] + 1)
    with pytest.raises(InputError, match="languages .* that the run was not trained on"):
        pipeline.make_eval_batches(language_sources["eval"], language_ids=("en", "ru"), **kwargs)
