"""Sequence packing (MLPerf BERT) of sentence-pair instances: the packed-batch contract, padding,
determinism, resumption and process sharding of `instance_packing.py` through `make_pretraining_iterator`."""

import collections
import json

import numpy as np
import pytest

from bert_jax.config import InputError
from bert_jax.data import pipeline, sequence_packing
from bert_jax.data.vocab import CLS_ID, PAD_ID, SEP_ID

MAX_SEQ_LENGTH = 128
K = 3


def _iterator(sources, **options):
    kwargs = dict(max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1, batch_size=4, seed=3, pack_sequences=True,
                  max_instances_per_pack=K) | options
    return pipeline.make_pretraining_iterator(sources["train"], **kwargs)


def _instances(batch):
    """Every instance of a packed batch: (input_ids, segment_ids, next_sentence_label), row by row."""
    found = []
    for row in range(batch["input_ids"].shape[0]):
        mask = batch["attention_mask"][row]
        for k in range(1, int(mask.max()) + 1):
            found.append((tuple(batch["input_ids"][row][mask == k].tolist()),
                          tuple(batch["segment_ids"][row][mask == k].tolist()),
                          int(batch["next_sentence_labels"][row, k - 1])))
    return found


def _unpacked_instances(batch):
    """The same triples from an unpacked batch, padding dropped."""
    return [(tuple(ids[mask == 1].tolist()), tuple(segments[mask == 1].tolist()), int(label))
            for ids, segments, mask, label in zip(batch["input_ids"], batch["segment_ids"], batch["attention_mask"],
                                                  batch["next_sentence_labels"])]


def _check_packed_row(row: dict, max_seq_length: int, num_slots: int, objective: str = "mlm_nsp"):
    """The contract of one packed row; returns its number of instances."""
    ids, segments, mask, positions = row["input_ids"], row["segment_ids"], row["attention_mask"], row["position_ids"]
    num_instances = int(mask.max())
    assert 1 <= num_instances <= num_slots
    length = int(np.count_nonzero(mask))
    # Instance ids 1..n, each one contiguous run, in order, then padding only.
    np.testing.assert_array_equal(mask[:length], np.repeat(np.arange(1, num_instances + 1),
                                                           np.bincount(mask[:length])[1:]))
    assert (mask[length:] == 0).all() and (ids[length:] == PAD_ID).all()
    assert (segments[length:] == 0).all() and (positions[length:] == 0).all()
    starts = np.flatnonzero(np.diff(np.concatenate([[0], mask[:length]])))  # first token of each instance
    np.testing.assert_array_equal(row["pair_positions"][:num_instances], starts)
    assert (row["pair_positions"][num_instances:] == 0).all()
    assert (ids[starts] == CLS_ID).all() and np.count_nonzero(ids[:length] == CLS_ID) == num_instances
    np.testing.assert_array_equal(row["pair_weights"], (np.arange(num_slots) < num_instances).astype(np.float32))
    assert (row["next_sentence_labels"][num_instances:] == 0).all()
    assert np.isin(row["next_sentence_labels"][:num_instances], [0, 1]).all()
    for k in range(1, num_instances + 1):
        span = mask == k
        np.testing.assert_array_equal(positions[span], np.arange(np.count_nonzero(span)))  # from 0 at its [CLS]
        instance_ids, instance_segments = ids[span], segments[span]
        seps = np.flatnonzero(instance_ids == SEP_ID)
        assert seps[-1] == len(instance_ids) - 1  # [CLS] A [SEP] B [SEP]: its own layout, its own segments
        if objective == "mlm":
            assert len(seps) == 1 and (instance_segments == 0).all()
        else:
            assert len(seps) == 2
            assert (instance_segments[:seps[0] + 1] == 0).all() and (instance_segments[seps[0] + 1:] == 1).all()
    return num_instances


def test_pack_row_by_hand():
    def instance(ids, segments, label, seed):
        padded = np.zeros(12, np.int32)
        padded[:len(ids)] = ids
        return {"input_ids": padded, "segment_ids": np.pad(np.asarray(segments, np.int32), (0, 12 - len(segments))),
                "attention_mask": (np.arange(12) < len(ids)).astype(np.int32),
                "next_sentence_labels": np.int32(label), "mask_seeds": np.int32(seed)}

    first = instance([CLS_ID, 7, SEP_ID, 8, SEP_ID], [0, 0, 0, 1, 1], 1, 11)
    second = instance([CLS_ID, 9, 9, SEP_ID, 5, SEP_ID], [0, 0, 0, 0, 1, 1], 0, 22)
    row = sequence_packing.pack_row([first, second], 12, 3, PAD_ID)
    np.testing.assert_array_equal(row["input_ids"], [CLS_ID, 7, SEP_ID, 8, SEP_ID, CLS_ID, 9, 9, SEP_ID, 5, SEP_ID,
                                                     PAD_ID])
    np.testing.assert_array_equal(row["segment_ids"], [0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(row["attention_mask"], [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0])
    np.testing.assert_array_equal(row["position_ids"], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(row["pair_positions"], [0, 5, 0])
    np.testing.assert_array_equal(row["next_sentence_labels"], [1, 0, 0])
    np.testing.assert_array_equal(row["pair_weights"], [1, 1, 0])
    assert row["mask_seeds"] == sequence_packing.row_mask_seed([11, 22]) != sequence_packing.row_mask_seed([22, 11])
    assert sequence_packing.row_mask_seed([11]) == 11  # one instance per row: the unpacked masks
    _check_packed_row(row, 12, 3)
    with pytest.raises(ValueError, match="do not fit"):
        sequence_packing.pack_row([first, second, second], 12, 3, PAD_ID)


@pytest.mark.parametrize("options", [
    {},
    dict(objective="mlm_sop", dynamic_masking=False, dupe_factor=2),
    dict(objective="mlm", dynamic_masking=False),
    dict(max_seq_length=512, max_instances_per_pack=8),
], ids=["nsp", "sop_static", "mlm_static", "seq512_k8"])
def test_packed_batches_follow_the_contract(sources, options):
    iterator = _iterator(sources, **options)
    max_seq_length = options.get("max_seq_length", MAX_SEQ_LENGTH)
    num_slots = options.get("max_instances_per_pack", K)
    counts = []
    for _ in range(4):
        batch = next(iterator)
        assert set(batch) == set(sequence_packing.PACKED_FEATURE_KEYS)
        for key in ("input_ids", "segment_ids", "attention_mask", "position_ids"):
            assert batch[key].shape == (4, max_seq_length) and batch[key].dtype == np.int32, key
        for key in ("pair_positions", "next_sentence_labels"):
            assert batch[key].shape == (4, num_slots) and batch[key].dtype == np.int32, key
        assert batch["pair_weights"].shape == (4, num_slots) and batch["pair_weights"].dtype == np.float32
        assert batch["mask_seeds"].shape == (4,) and batch["mask_seeds"].dtype == np.int32
        for row in range(4):
            counts.append(_check_packed_row({key: value[row] for key, value in batch.items()}, max_seq_length,
                                            num_slots, options.get("objective", "mlm_nsp")))
    assert max(counts) > 1  # it does pack


def test_unpacked_batches_keep_their_keys(sources):
    batch = next(_iterator(sources, pack_sequences=False))
    assert set(batch) == {"input_ids", "segment_ids", "attention_mask", "next_sentence_labels", "mask_seeds"}


def _epoch(sources, max_seq_length, **options):
    kwargs = dict(max_seq_length=max_seq_length, short_seq_prob=0.1, batch_size=1, seed=0, num_epochs=1) | options
    return list(pipeline.make_pretraining_iterator(sources["train"], **kwargs))


def reference_first_fit_decreasing(lengths, capacity, max_items):
    """Offline first-fit decreasing bin packing (at most `max_items` per bin): the number of bins."""
    bins = []  # [free room, items]
    for length in sorted(lengths, reverse=True):
        for slot in bins:
            if slot[0] >= length and slot[1] < max_items:
                slot[0], slot[1] = slot[0] - length, slot[1] + 1
                break
        else:
            bins.append([capacity - length, 1])
    return len(bins)


@pytest.mark.parametrize("max_seq_length,max_instances_per_pack", [(128, 3), (512, 3), (512, 8)])
def test_packing_lowers_padding(sources, max_seq_length, max_instances_per_pack):
    unpacked = _epoch(sources, max_seq_length)
    packed = _epoch(sources, max_seq_length, pack_sequences=True, max_instances_per_pack=max_instances_per_pack)
    unpacked_padding, packed_padding = pipeline.padding_fraction(unpacked), pipeline.padding_fraction(packed)
    print(f"seq {max_seq_length}, K {max_instances_per_pack}: {len(unpacked)} rows, padding {unpacked_padding:.3f} "
          f"unpacked; {len(packed)} rows, padding {packed_padding:.3f} packed")
    assert packed_padding < unpacked_padding
    # One process, same seed: the same instances, so the online packer can be held to an offline one.
    lengths = [int(batch["attention_mask"].sum()) for batch in unpacked]
    assert sum(int(np.count_nonzero(batch["attention_mask"])) for batch in packed) == sum(lengths)
    offline = reference_first_fit_decreasing(lengths, max_seq_length, max_instances_per_pack)
    assert len(packed) <= 1.15 * offline + 1


@pytest.mark.parametrize("options", [{}, dict(objective="mlm_sop", dynamic_masking=False, dupe_factor=2)],
                         ids=["dynamic", "static"])
def test_packed_iterator_is_deterministic_and_resumable(sources, options):
    first = _iterator(sources, **options)
    batches = [next(first) for _ in range(60)]  # several epochs of the small corpus
    again = _iterator(sources, **options)
    for batch in batches:
        again_batch = next(again)
        for key in sequence_packing.PACKED_FEATURE_KEYS:
            np.testing.assert_array_equal(again_batch[key], batch[key])
    for taken in (0, 1, 7, 23):  # resume at several points, so with different rows left open
        iterator = _iterator(sources, **options)
        for _ in range(taken):
            next(iterator)
        state = json.loads(json.dumps(iterator.get_state()))  # as the checkpoint stores it
        resumed = _iterator(sources, **options)
        resumed.set_state(state)
        for expected in batches[taken:taken + 5]:
            batch = next(resumed)
            for key in sequence_packing.PACKED_FEATURE_KEYS:
                np.testing.assert_array_equal(batch[key], expected[key])
    other_seed = _iterator(sources, **(options | {"seed": 4}))
    assert not np.array_equal(next(other_seed)["input_ids"], batches[0]["input_ids"])


def test_packed_processes_are_disjoint_and_complete(sources):
    """Over one epoch, 2 processes pack disjoint instances that together are every instance once."""
    kwargs = dict(batch_size=1, seed=0, num_epochs=1, dynamic_masking=False, dupe_factor=1)
    unpacked = [x for batch in _iterator(sources, pack_sequences=False, **kwargs) for x in _unpacked_instances(batch)]
    shards = [[x for batch in _iterator(sources, process_index=i, process_count=2, **kwargs) for x in _instances(batch)]
              for i in range(2)]
    single = [x for batch in _iterator(sources, **kwargs) for x in _instances(batch)]
    assert len(unpacked) == len(pipeline.index_instances(
        pipeline.load_sentence_lengths(sources["train"]), MAX_SEQ_LENGTH, 0.1, 0))
    assert collections.Counter(single) == collections.Counter(unpacked)  # each instance once, none split
    assert collections.Counter(shards[0]) + collections.Counter(shards[1]) == collections.Counter(unpacked)
    assert abs(len(shards[0]) - len(shards[1])) <= 1  # process i takes stream positions i::2


def test_one_instance_per_pack_is_the_unpacked_stream(sources):
    kwargs = dict(seed=1, dynamic_masking=False, dupe_factor=2)
    unpacked, packed = _iterator(sources, pack_sequences=False, **kwargs), _iterator(sources, max_instances_per_pack=1,
                                                                                     **kwargs)
    for _ in range(5):
        expected, batch = next(unpacked), next(packed)
        for key in ("input_ids", "segment_ids", "attention_mask", "mask_seeds"):
            np.testing.assert_array_equal(batch[key], expected[key])
        np.testing.assert_array_equal(batch["next_sentence_labels"][:, 0], expected["next_sentence_labels"])


def test_packing_needs_sentence_pairs(sources):
    with pytest.raises(InputError, match="pack_sequences"):
        _iterator(sources, objective="mlm", instance_format="full_sentences")
    with pytest.raises(InputError, match="max_instances_per_pack"):
        _iterator(sources, max_instances_per_pack=0)


def test_packed_iterator_with_grain_workers_resumes(sources):
    """Each Grain worker packs its own slice of the stream; the state still resumes at the next batch."""
    from absl import flags
    if not flags.FLAGS.is_parsed():  # Grain's workers read their flags
        flags.FLAGS.mark_as_parsed()
    iterator = _iterator(sources, num_workers=2)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    following = [next(iterator) for _ in range(3)]
    resumed = _iterator(sources, num_workers=2)
    resumed.set_state(json.loads(json.dumps(state)))
    for expected in following:
        batch = next(resumed)
        for key in sequence_packing.PACKED_FEATURE_KEYS:
            np.testing.assert_array_equal(batch[key], expected[key])


def test_synthetic_packed_batch_follows_the_contract():
    from bert_jax.tools import benchmarking
    batch = benchmarking.synthetic_packed_batch(3, 64, 100, max_instances_per_pack=3, padding_fraction=0.25, seed=1)
    assert set(batch) == set(sequence_packing.PACKED_FEATURE_KEYS)
    for row in range(3):
        assert _check_packed_row({key: value[row] for key, value in batch.items()}, 64, 3) == 3
    assert pipeline.padding_fraction([batch]) == pytest.approx(1 - 3 * 16 / 64)
    with pytest.raises(InputError, match="padding_fraction"):
        benchmarking.synthetic_packed_batch(1, 16, 100, max_instances_per_pack=8)
