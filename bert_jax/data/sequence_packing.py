"""Sequence packing as in MLPerf BERT: several sentence-pair instances share one row of max_seq_length.

Most instances are shorter than `max_seq_length` (a document's last chunk, the `short_seq_prob`
chunks), and an unpacked row pays for its padding in every layer. Here whole instances, each still
laid out `[CLS] A [SEP] B [SEP]` by `pretraining._InstanceBuilder`, are placed one after another in
a row, up to `max_instances_per_pack` per row. A packed row carries, besides `input_ids` and
`segment_ids` [seq]: `attention_mask` [seq] (0 padding, k >= 1 the k-th instance of the row: an
instance attends only to itself), `position_ids` [seq] (from 0 at each instance's [CLS]),
`pair_positions` [K] (where each instance's [CLS] is), `next_sentence_labels` [K] and `pair_weights`
[K] (1 for a real instance, 0 for an empty slot), and one `mask_seeds` per row.

Packing is online and greedy over the stream of built instances (so it uses their real lengths,
after the NotNext partner and truncation are chosen): each instance goes to the open row it fills
best (best fit: the fullest row it fits in, and that has a free slot); if none can take it a new row
opens, and when `num_open_rows` rows are open the oldest is emitted first, so no instance waits more
than a bounded number of rows and the window is small enough to keep in the iterator state. A row
that is full or has all its slots taken is emitted at once. MLPerf packs offline over the whole
dataset from its length histogram; a window of a few dozen rows gets most of that gain without a
pass over the data. On 1,600 generated documents (tests/conftest.py's generator) at seq 128, K 3,
padding is 43% unpacked, 26% / 12% / 9% / 7% packed with 1 / 8 / 16 / 32 open rows, and 4% for
offline first-fit-decreasing; at seq 512, K 8, 85% unpacked and 2% packed (32 rows).

Why not grain's `FirstFitPackIterDataset` / `BestFitPackIterDataset`: they fit token features and
emit per-feature `*_segment_ids` / `*_positions`, but they flush all their bins whenever one element
fits none of them (so rows leave half empty), return per-instance scalars (labels, mask seeds) as
ragged lists rather than [K] slots, and have no notion of a per-row mask seed. The packer here is
short and emits the contract directly.

Processes and Grain workers: each packs its own disjoint slice of the instance stream (process `i` of
P the stream positions `i::P`; a worker a slice of those), so together they still see every instance
once per epoch, but unlike the unpacked pipeline the global batch depends on the process and worker
counts (MLPerf's offline packs do not, at the price of a pass over the data).

State: the iterator state is the parent's, plus the stream positions of the instances in the open and
ready rows (a few small integers, JSON for the checkpoint). On restore those instances are rebuilt by
random access into the parent `MapDataset` (an instance depends only on its stream position), so a
restored iterator continues with exactly the next row.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

PACKED_FEATURE_KEYS = ("input_ids", "segment_ids", "attention_mask", "position_ids", "pair_positions",
                       "next_sentence_labels", "pair_weights", "mask_seeds")
NUM_OPEN_ROWS = 32  # rows filled at once: more pack tighter (see the module docstring), each costs a little state
_ROW_SEED_DOMAIN = 0x7061636B  # "pack": keeps row mask seeds apart from the instances' own seeds
_MIN_INSTANCE_LENGTH = 3  # [CLS] x [SEP]: a row with less room left can take no instance


def row_mask_seed(instance_mask_seeds: Sequence[int]) -> np.int32:
    """One 31-bit mask seed for a row, hashed from its instances' seeds in order.

    A row of one instance keeps that instance's seed, so with one instance per row the masks are
    those of the unpacked pipeline; the same pack of the same instance copies always gets the same masks.
    """
    if len(instance_mask_seeds) == 1:
        return np.int32(instance_mask_seeds[0])
    state = np.random.SeedSequence([_ROW_SEED_DOMAIN, *map(int, instance_mask_seeds)]).generate_state(1)
    return np.int32(state[0] >> 1)


def instance_length(instance: dict[str, np.ndarray]) -> int:
    """Real tokens of an unpacked instance (its `attention_mask` is 1 on them, then 0)."""
    return int(np.count_nonzero(instance["attention_mask"]))


def pack_row(instances: Sequence[dict[str, np.ndarray]], max_seq_length: int, max_instances_per_pack: int,
             pad_id: int) -> dict[str, np.ndarray]:
    """Lays unpacked instances (`input_ids`, `segment_ids`, `attention_mask` [seq],
    `next_sentence_labels` and `mask_seeds` scalars) one after another into one packed row.

    Returns the packed features of the module docstring: int32 [max_seq_length] token features, int32
    `pair_positions`, `next_sentence_labels` and float32 `pair_weights` [max_instances_per_pack],
    int32 `mask_seeds` scalar.
    """
    if not 1 <= len(instances) <= max_instances_per_pack:
        raise ValueError(f"a packed row holds 1 to {max_instances_per_pack} instances, got {len(instances)}.")
    input_ids = np.full(max_seq_length, pad_id, np.int32)  # [seq]
    segment_ids = np.zeros(max_seq_length, np.int32)  # [seq]
    attention_mask = np.zeros(max_seq_length, np.int32)  # [seq]
    position_ids = np.zeros(max_seq_length, np.int32)  # [seq]
    pair_positions = np.zeros(max_instances_per_pack, np.int32)  # [K]
    next_sentence_labels = np.zeros(max_instances_per_pack, np.int32)  # [K]
    pair_weights = np.zeros(max_instances_per_pack, np.float32)  # [K]
    start = 0
    for k, instance in enumerate(instances):
        length = instance_length(instance)
        end = start + length
        if end > max_seq_length:
            raise ValueError(f"instances of {[instance_length(x) for x in instances]} tokens do not fit in one "
                             f"row of {max_seq_length}.")
        input_ids[start:end] = instance["input_ids"][:length]
        segment_ids[start:end] = instance["segment_ids"][:length]
        attention_mask[start:end] = k + 1
        position_ids[start:end] = np.arange(length)
        pair_positions[k] = start
        next_sentence_labels[k] = instance["next_sentence_labels"]
        pair_weights[k] = 1.0
        start = end
    return {"input_ids": input_ids, "segment_ids": segment_ids, "attention_mask": attention_mask,
            "position_ids": position_ids, "pair_positions": pair_positions,
            "next_sentence_labels": next_sentence_labels, "pair_weights": pair_weights,
            "mask_seeds": row_mask_seed([int(x["mask_seeds"]) for x in instances])}


class PackedInstances(grain.IterDataset):
    """Packed rows from a `MapDataset` of unpacked instances, in stream order (see the module docstring).

    The parent must be random-access and deterministic per index (as the pretraining stream is), because
    a restored iterator rebuilds the instances of its open rows from their indices.
    """

    def __init__(self, parent: grain.MapDataset, *, max_seq_length: int, max_instances_per_pack: int,
                 pad_id: int, num_open_rows: int = NUM_OPEN_ROWS):
        super().__init__(parent)
        if max_instances_per_pack < 1 or num_open_rows < 1:
            raise ValueError(f"max_instances_per_pack ({max_instances_per_pack}) and num_open_rows "
                             f"({num_open_rows}) must be at least 1.")
        self._options = dict(max_seq_length=max_seq_length, max_instances_per_pack=max_instances_per_pack,
                             pad_id=pad_id, num_open_rows=num_open_rows)

    def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
        """Grain worker `i` of `n` packs its own slice of the instance stream."""
        del sequential_slice  # the stream is endless or epoch-long; any slice of it is read in order
        self._parents = (self._parent.slice(sl),)

    def __iter__(self) -> grain.DatasetIterator:
        return _PackingIterator(self._parent, **self._options)

    def __str__(self) -> str:
        return f"PackedInstances({self._options})"


def state_at(fresh_state: dict[str, Any], position: int) -> dict[str, Any]:
    """The state of a packing iterator at instance `position` of its stream, with no rows open.

    `fresh_state` is the state of a new iterator of the same stream (its parent's state at position 0
    gives the form). A resume whose saved position belongs to another layout (unpacked rows, another
    pack size) starts here: instances that were waiting in the old open rows are skipped.
    """
    parent = dict(fresh_state["parent"])
    if set(parent) != {"next_index"}:
        raise ValueError(f"unexpected state of the instance stream: {parent}")
    parent["next_index"] = position
    return {"parent": parent, "next_index": position, "open_rows": [], "ready_rows": [], "exhausted": False}


class _Row:
    """A row being filled: its instances' stream positions, the instances, and the room left."""

    __slots__ = ("positions", "instances", "free")

    def __init__(self, max_seq_length: int):
        self.positions: list[int] = []
        self.instances: list[dict[str, np.ndarray]] = []
        self.free = max_seq_length

    def add(self, position: int, instance: dict[str, np.ndarray], length: int) -> None:
        self.positions.append(position)
        self.instances.append(instance)
        self.free -= length


class _PackingIterator(grain.DatasetIterator):
    """Best fit into at most `num_open_rows` open rows; rows leave in the order they close."""

    def __init__(self, instances: grain.MapDataset, *, max_seq_length: int, max_instances_per_pack: int,
                 pad_id: int, num_open_rows: int):
        # Instances are read in this thread: they are cheap, and grain's per-element prefetch costs more than
        # it saves here. The packed batches are prefetched in a thread or in worker processes downstream.
        super().__init__(instances.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
                         .__iter__())
        self._instances = instances
        self._max_seq_length, self._max_instances = max_seq_length, max_instances_per_pack
        self._pad_id, self._num_open_rows = pad_id, num_open_rows
        self._next_index = 0  # stream position of the next instance the parent yields
        self._open: list[_Row] = []  # rows being filled, oldest first
        self._ready: collections.deque[_Row] = collections.deque()  # closed rows, not yet emitted
        self._exhausted = False

    def _is_closed(self, row: _Row) -> bool:
        return len(row.positions) == self._max_instances or row.free < _MIN_INSTANCE_LENGTH

    def _place(self, position: int, instance: dict[str, np.ndarray]) -> None:
        length = instance_length(instance)
        fits = [(row.free - length, i) for i, row in enumerate(self._open)
                if len(row.positions) < self._max_instances and row.free >= length]
        if fits:
            index = min(fits)[1]  # least room left after it; the oldest such row on a tie
        else:
            if len(self._open) == self._num_open_rows:
                self._ready.append(self._open.pop(0))
            index = len(self._open)
            self._open.append(_Row(self._max_seq_length))
        self._open[index].add(position, instance, length)
        if self._is_closed(self._open[index]):
            self._ready.append(self._open.pop(index))

    def __next__(self) -> dict[str, np.ndarray]:
        while not self._ready:
            if self._exhausted:
                raise StopIteration
            try:
                instance = next(self._parent)
            except StopIteration:
                self._exhausted = True
                self._ready.extend(self._open)
                self._open = []
                continue
            self._place(self._next_index, instance)
            self._next_index += 1
        row = self._ready.popleft()
        return pack_row(row.instances, self._max_seq_length, self._max_instances, self._pad_id)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "next_index": self._next_index,
                "open_rows": [list(row.positions) for row in self._open],
                "ready_rows": [list(row.positions) for row in self._ready],
                "exhausted": self._exhausted}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._next_index, self._exhausted = int(state["next_index"]), bool(state["exhausted"])

        def rebuild(positions: list[int]) -> _Row:
            row = _Row(self._max_seq_length)
            for position in positions:
                instance = self._instances[int(position)]
                row.add(int(position), instance, instance_length(instance))
            return row

        self._open = [rebuild(positions) for positions in state["open_rows"]]
        self._ready = collections.deque(rebuild(positions) for positions in state["ready_rows"])

    def __str__(self) -> str:
        return f"_PackingIterator({self._num_open_rows} open rows)"
