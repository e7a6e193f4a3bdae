"""A seeded mixture of several instance streams ("components") with fixed sampling weights.

XLM-R samples languages with q_i proportional to p_i^alpha (p_i: the language's share of the data), so
low-resource languages are seen more often and high-resource ones less; XLM mixes translation pairs with
monolingual text by a ratio. Both are `Mixture(sizes, weights, seed)`: a pure map from a position in the
stream to (component, local instance, visit), with no state, so Grain's checkpointed position, a restart at
any example and static masking (keyed on instance and copy) work as with one stream.

One epoch is `slots_per_epoch` positions (default: all instances once). Component i owns exactly
round(q_i * slots) of them (largest remainder, so they add up), in an order shuffled anew each epoch.
Its k-th slot overall takes instance perm_v(k mod n_i) with v = k // n_i, a permutation seeded per pass v:
a subsampled component walks on through its instances across epochs, so it sees every instance before
any repeats, and an upsampled one repeats whole passes, each in another order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

_SLOTS_DOMAIN = 0x736C6F74  # "slot": the per-epoch order of the slots
_WALK_DOMAIN = 0x77616C6B  # "walk": a component's order of instances in one pass
_ROUNDS = 4
_MASK64 = (1 << 64) - 1


def alpha_weights(sizes: Sequence[int], alpha: float) -> np.ndarray:
    """float64 [components]: q_i = p_i^alpha / sum_j p_j^alpha with p_i = sizes_i / sum(sizes) (XLM's
    exponent: 1 samples in proportion to size, 0 uniformly over components)."""
    sizes = np.asarray(sizes, np.float64)
    if len(sizes) == 0 or (sizes <= 0).any():
        raise ValueError(f"every component needs instances, got sizes {sizes.tolist()}.")
    powered = (sizes / sizes.sum()) ** float(alpha)
    return powered / powered.sum()


def slot_counts(weights: Sequence[float], num_slots: int) -> np.ndarray:
    """int64 [components]: round(q_i * num_slots) with q = weights normalised, by largest remainder (ties go
    to the earlier component), so the counts add up to exactly `num_slots`."""
    q = np.asarray(weights, np.float64)
    if len(q) == 0 or (q < 0).any() or q.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {q.tolist()}.")
    exact = q / q.sum() * num_slots
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = sorted(range(len(q)), key=lambda i: (-remainder[i], i))
    counts[order[:num_slots - int(counts.sum())]] += 1
    return counts


@functools.lru_cache(maxsize=4096)
def _round_keys(*values: int) -> tuple[int, ...]:
    """The Feistel round keys of one permutation, from integers (the same on every host and Python)."""
    return tuple(int(k) for k in np.random.SeedSequence([int(v) for v in values]).generate_state(_ROUNDS, np.uint64))


def _mix(value: int) -> int:
    """splitmix64's finaliser: a 64-bit hash with full avalanche."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def permuted(index: int, size: int, keys: Sequence[int]) -> int:
    """The image of `index` under a keyed permutation of [0, size): a Feistel network on the smallest
    even-bit power of two >= size, walked until it lands inside (fewer than 4 steps on average). O(1) memory
    and time, unlike a stored permutation (a corpus of 10^8 instances) or grain's index_shuffle (slow on
    small sizes)."""
    half = max(1, ((size - 1).bit_length() + 1) // 2)
    mask = (1 << half) - 1
    while True:
        left, right = index >> half, index & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        index = (left << half) | right
        if index < size:
            return index


class Mixture:
    """position -> (component, local instance, visit) for components of `sizes` instances sampled by `weights`.

    `visit` counts the passes of the component's walk before this one (0 on the first), so an instance's
    `visit`-th appearance is `visit`; static masking uses it as the copy. Picklable, stateless.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int,
                 slots_per_epoch: int | None = None):
        self.sizes = np.asarray(sizes, np.int64)  # [components]
        if len(self.sizes) == 0 or (self.sizes <= 0).any():
            raise ValueError(f"every component needs instances, got sizes {self.sizes.tolist()}.")
        if len(weights) != len(self.sizes):
            raise ValueError(f"{len(weights)} weights for {len(self.sizes)} components.")
        self.slots_per_epoch = int(self.sizes.sum() if slots_per_epoch is None else slots_per_epoch)
        if self.slots_per_epoch < 1:
            raise ValueError(f"slots_per_epoch must be positive, got {self.slots_per_epoch}.")
        self.weights = np.asarray(weights, np.float64) / float(np.sum(weights))  # [components]
        self.counts = slot_counts(self.weights, self.slots_per_epoch)  # [components] slots per epoch
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])  # [components + 1]
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.slots_per_epoch

    def locate(self, position: int) -> tuple[int, int, int]:
        """(component, local instance in [0, sizes[component]), visit) of stream position `position` >= 0."""
        epoch, slot = divmod(int(position), self.slots_per_epoch)
        shuffled = permuted(slot, self.slots_per_epoch, _round_keys(_SLOTS_DOMAIN, self.seed, epoch))
        component = int(np.searchsorted(self.starts, shuffled, side="right")) - 1
        walked = epoch * int(self.counts[component]) + shuffled - int(self.starts[component])
        size = int(self.sizes[component])
        visit, step = divmod(walked, size)
        return component, permuted(step, size, _round_keys(_WALK_DOMAIN, self.seed, component, visit)), visit

    def starved(self) -> list[int]:
        """The components with a positive weight that round to no slot in an epoch: they would never be drawn."""
        return [i for i, (w, c) in enumerate(zip(self.weights, self.counts)) if w > 0 and c == 0]

    def table(self) -> list[dict[str, float]]:
        """Per component: instances, p (share of the instances), q (sampling weight), slots per epoch, and
        the epochs of the stream it takes to see each of its instances once (below 1: it repeats)."""
        shares = self.sizes / self.sizes.sum()
        return [{"instances": int(n), "p": float(p), "q": float(q), "slots_per_epoch": int(c),
                 "epochs_per_pass": float(n / c) if c else float("inf")}
                for n, p, q, c in zip(self.sizes, shares, self.weights, self.counts)]
