"""`TaskSpec`: what a fine-tuning task is, whether a benchmark (tasks.py) or the user's own (own_tasks.py)."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Where a task's data lives and what its labels are.

    `label_names` are in TFDS's order, so label ids agree between local files and TFDS (empty for
    regression and QA; SWAG's are the ending numbers). `local_files` maps each split to its file name
    in `data_dir`; its keys are the task's splits. `text_features` are the TFDS feature names of text_a
    (and text_b); `tsv_text_columns`/`tsv_label_column` the GLUE TSV header names of the same fields.
    """

    name: str
    kind: str
    label_names: tuple[str, ...]
    eval_splits: tuple[str, ...]
    local_files: Mapping[str, str]
    tfds_name: str | None
    text_features: tuple[str, ...] = ()
    tsv_text_columns: tuple[str, ...] = ()
    tsv_label_column: str = ""
    train_split: str = "train"
    # The user's own tasks (own_tasks.py): how their files are read, and what the training data said.
    reading: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tag_scheme: str = ""  # token_classification: BIO | IOB1 | IOBES
    own: bool = False  # local_files are full paths of the user's files, not names in data_dir
    version_2: bool = False  # qa: some questions have no answer (SQuAD v2.0 scoring)

    def __post_init__(self):
        # Read-only, so that no caller can change the registry's file names for everyone.
        object.__setattr__(self, "local_files", types.MappingProxyType(dict(self.local_files)))
        object.__setattr__(self, "reading", types.MappingProxyType(dict(self.reading)))

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split the task has, train first."""
        return tuple(self.local_files)
