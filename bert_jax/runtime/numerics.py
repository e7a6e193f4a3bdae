"""The host side of the non-finite guard: counting skipped steps and deciding when to fall back.

The train step itself skips an update whose loss or gradient is NaN/inf (`train.keep_if_finite`). A
few such steps are noise (one bad batch); many in a row mean the run is stuck, so after
`config.train.max_consecutive_nonfinite_steps` of them the trainer restores the newest checkpoint from
before the streak and goes on with the next batch. If the streak comes back before a single good step,
restoring again would only loop, so the run stops and says why.
"""

from __future__ import annotations

from bert_jax.config import InputError


class NonFiniteStreak:
    """Follows the `nonfinite` flag of each step (numbered as in the log: 1 = the first update)."""

    def __init__(self, limit: int):
        self.limit = limit  # 0: never restore
        self.first_step = 0  # first step of the current streak
        self.length = 0
        self._restored_from = None  # checkpoint step of the last restore, until a good step follows it

    def record(self, step: int, nonfinite: bool) -> bool:
        """Takes step `step`'s flag; True when the streak has reached the limit and a restore is due."""
        if not nonfinite:
            self.length, self._restored_from = 0, None
            return False
        if self.length == 0:
            self.first_step = step
        self.length += 1
        if self.limit and self.length >= self.limit and self._restored_from is not None:
            raise InputError(
                f"steps {self.first_step}-{step} were all non-finite right after restoring the checkpoint of step "
                f"{self._restored_from}: the run has diverged; lower config.train.learning_rate or check the data.")
        return bool(self.limit) and self.length >= self.limit

    def restored(self, checkpoint_step: int) -> None:
        """Notes the restore that ended the streak; the next streak must be preceded by a good step."""
        self.length, self._restored_from = 0, checkpoint_step
