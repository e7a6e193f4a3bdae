"""Tasks on the user's own files, declared in the config: `config.task` names a task kind and
`config.data.train_file` (and `validation_file`, `test_file`) the data.

`make_task(config)` returns the same `TaskSpec` the benchmark tasks are, with the label set read from the
training file when the config does not give one: sorted, numbers numerically, so the same file always
gives the same label ids (they are stored with the model). `read_split` turns one file into the examples
of the task's kind. Every problem names the file and line and says the fix.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from bert_jax.config import InputError
from bert_jax.finetuning import table_files, tag_schemes, task_files
from bert_jax.finetuning.qa import QAExample
from bert_jax.finetuning.task_files import (
    ChoiceExample,
    ClassificationExample,
    SentenceExample,
    TokenExample,
)
from bert_jax.finetuning.task_spec import TaskSpec

OWN_KINDS = ("classification", "multi_label_classification", "regression", "token_classification", "qa",
             "multiple_choice", "sentence_embedding")
SPLITS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
# The settings of `config.data` that say how a file is read; stored with the model so predict reads alike.
READING_FIELDS = ("file_format", "text_column", "text_pair_column", "label_column", "label_separator",
                  "tokens_column", "tags_column", "context_column", "question_column", "choice_columns",
                  "negative_column")
_NUMBER = re.compile(r"^[+-]?\d+$")
_CHOICE_COLUMN = re.compile(r"^(choice|ending|option)_?(\d+)$")


def is_own(config) -> bool:
    return config.task in OWN_KINDS


def reading_settings(config) -> dict[str, Any]:
    settings = {name: config.data[name] for name in READING_FIELDS}
    settings["choice_columns"] = tuple(settings["choice_columns"])
    if config.task == "sentence_embedding":  # what its label column holds follows the loss
        settings["sentence_loss"] = config.sentence.loss
    return settings


def label_view(spec):
    """`spec` as its labels are read: a sentence_embedding task's labels are classes (softmax), scores
    (cosent, cosine_similarity) or absent (multiple_negatives_ranking), as for those kinds."""
    if spec.kind != "sentence_embedding":
        return spec
    loss = spec.reading.get("sentence_loss", "multiple_negatives_ranking")
    kind = {"softmax": "classification", "multiple_negatives_ranking": "sentence_embedding"}.get(loss, "regression")
    return dataclasses.replace(spec, kind=kind)


def make_task(config):
    """The TaskSpec of the user's task in `config`; reads the training file for its label set."""
    data = config.data
    if not data.train_file:
        raise InputError(f"config.task={config.task!r} trains on your own files, but config.data.train_file is "
                         "empty; give --config.data.train_file=PATH (and validation_file, test_file).")
    files = {split: data[field] for split, field in SPLITS.items() if data[field]}
    given = tuple(str(name) for name in data.label_names)
    spec = TaskSpec(name=config.task, kind=config.task, label_names=given, eval_splits=(
        ("validation",) if "validation" in files else ()), local_files=files, tfds_name=None,
        reading=reading_settings(config), tag_scheme=data.tag_scheme, own=True)
    train = _raw_rows(spec, "train")
    labels = label_view(spec)
    if given and labels.kind not in ("regression", "qa", "multiple_choice") and len(set(given)) != len(given):
        raise InputError(f"config.data.label_names={list(given)} names a label twice; list each once.")
    label_names = given or _label_set(labels, train)
    _check_label_set(labels, label_names, given=bool(given))
    tag_scheme = _tag_scheme(spec, train) if spec.kind == "token_classification" else ""
    version_2 = spec.kind == "qa" and any(e.is_impossible or not e.answers for e in train)
    task = TaskSpec(name=spec.name, kind=spec.kind, label_names=label_names, eval_splits=spec.eval_splits,
                    local_files=files, tfds_name=None, reading=spec.reading, tag_scheme=tag_scheme, own=True,
                    version_2=version_2)
    if spec.kind in ("classification", "multi_label_classification", "regression", "multiple_choice",
                     "sentence_embedding"):
        read_split(task, "train")  # every column and label checked now, before a model is loaded
    return task


def test_split(task) -> str | None:
    """The split scored once with the chosen checkpoint, if the task has one."""
    return "test" if task.own and "test" in task.local_files else None


def read_split(task, split: str, *, labelled: bool | None = None) -> list[Any]:
    """The examples of `split`; `labelled` None: the train and validation files must have labels, a test
    file may go without (it is then only predicted)."""
    return examples_from_file(task, task.local_files[split], split, labelled=labelled)


def examples_from_file(task, path: str, split: str, *, labelled: bool | None = None,
                       flag: str = "--config.data.{}=") -> list[Any]:
    """Examples of `task`'s kind from any file in its formats (`predict` reads new text with it; `flag` is how
    its messages name a column setting)."""
    need = split in ("train", "validation") if labelled is None else labelled
    kind = task.kind
    fmt = table_files.file_format(path, task.reading["file_format"])
    if kind == "qa":
        return _qa_examples(path, fmt, need)
    if kind == "token_classification":
        return _token_examples(task, path, fmt, split, need, flag)
    table = table_files.read_table(path, fmt, flag)
    if kind == "multiple_choice":
        return _choice_examples(task, table, split, need)
    if kind == "sentence_embedding":
        return _sentence_examples(task, table, split, need)
    return _classification_examples(task, table, split, need)


# ------------------------------------------------------------------ labels

def _raw_rows(spec, split: str):
    """The training file read with an open label set (so its labels can be collected)."""
    if spec.kind == "qa":
        return examples_from_file(spec, spec.local_files[split], split, labelled=True)
    if spec.kind == "token_classification":
        return _token_sentences(spec, spec.local_files[split], table_files.file_format(
            spec.local_files[split], spec.reading["file_format"]), need=True)
    return table_files.read_table(spec.local_files[split],
                                  table_files.file_format(spec.local_files[split], spec.reading["file_format"]))


def _label_set(spec, train) -> tuple[str, ...]:
    """Every label of the training data in a stable order: numbers numerically, other strings sorted."""
    if spec.kind in ("regression", "qa", "multiple_choice", "sentence_embedding"):
        return ()
    if spec.kind == "token_classification":
        values = {(line, tag) for line, _, tags in train for tag in tags}
    else:
        column = spec.reading["label_column"]
        train.require(column, "label_column")
        values = set()
        for line, row in train.rows:
            for value in _cell_labels(spec, row[column], train.where(line)):
                values.add((line, value))
    return _sorted_labels(values, spec.local_files["train"])


def _sorted_labels(values: set[tuple[int, Any]], path: str) -> tuple[str, ...]:
    numeric = {(line, v) for line, v in values if isinstance(v, int) or isinstance(v, str) and _NUMBER.match(v)}
    other = values - numeric
    if numeric and other:
        (line_n, number), (line_o, name) = (min(group, key=lambda item: item[0]) for group in (numeric, other))
        raise InputError(f"{path}: mixed label types: line {line_n} has the number {number!r}, line {line_o} the "
                         f"name {name!r}; use one kind for every label (or give config.data.label_names).")
    if numeric:
        return tuple(str(n) for n in sorted({int(v) for _, v in numeric}))
    return tuple(sorted({str(v) for _, v in other}))


_SCORE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)$")


def _check_label_set(spec, label_names: tuple[str, ...], *, given: bool) -> None:
    """A label set a model can learn from: at least two classes (tags), and not scores by mistake."""
    path = spec.local_files["train"]
    if given and spec.kind in ("classification", "token_classification") and len(label_names) < 2:
        raise InputError(f"config.data.label_names={list(label_names)} lists fewer than two labels; a classifier "
                         "needs at least two: list every label (or leave it empty to read them from the data).")
    if spec.kind in ("classification", "token_classification") and len(label_names) < 2:
        what = "tag" if spec.kind == "token_classification" else "label"
        raise InputError(f"{path}: every example has the {what} {label_names[0] if label_names else None!r}; a "
                         f"classifier needs at least two, so give examples of the others (or list them all in "
                         "config.data.label_names).")
    if spec.kind == "multi_label_classification" and not label_names:
        raise InputError(f"{path}: no example has a label; give each row its labels.")
    if not given and spec.kind == "classification" and all(_SCORE.match(name) for name in label_names):
        raise InputError(f"{path}: the labels look like scores ({', '.join(label_names[:3])}, ...), which a "
                         "classifier would treat as unrelated names; for scores use config.task='regression', or "
                         "list the classes in config.data.label_names to keep them as classes.")


def _cell_labels(spec, value, where: str) -> list:
    """The label(s) of one cell as written: one for classification, a list for multi-label."""
    if value is None or isinstance(value, str) and not value.strip():
        if spec.kind == "multi_label_classification":
            return []
        raise InputError(f"{where}: the label is empty; give every training and validation row a label.")
    if isinstance(value, bool):
        return [str(value).lower()]  # JSON true / false: the classes "true" and "false"
    if isinstance(value, float) and spec.kind != "regression":
        raise InputError(f"{where}: label {value!r} is a float; classification labels are names or whole numbers "
                         "(for scores use config.task='regression').")
    if spec.kind == "multi_label_classification":
        if isinstance(value, list):
            return [_one_label(v, where) for v in value]
        if isinstance(value, str):
            return [part.strip() for part in value.split(spec.reading["label_separator"]) if part.strip()]
        return [_one_label(value, where)]
    if isinstance(value, list):
        raise InputError(f"{where}: the label is a list; for several labels per example use "
                         "config.task='multi_label_classification'.")
    return [_one_label(value, where)]


def _one_label(value, where: str):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, str)):
        return value.strip() if isinstance(value, str) else value
    raise InputError(f"{where}: label {value!r} is neither a name nor a whole number.")


def _label_id(task, value, where: str, need: bool = True) -> int:
    name = str(value).strip()
    if name not in task.label_names and _NUMBER.match(name) and str(int(name)) in task.label_names:
        name = str(int(name))  # "01", "+1": the number the label set holds
    if name not in task.label_names:
        shown = ", ".join(map(repr, task.label_names[:20])) + (" ..." if len(task.label_names) > 20 else "")
        fix = ("fix the label, add examples of it to the training file, or list every label in "
               "config.data.label_names" if need else
               "a test or input file is scored against those labels only: fix the label, or leave the label "
               "column out to only predict")
        raise InputError(f"{where}: label {name!r} is not one of the training file's labels ({shown}); {fix}.")
    return task.label_names.index(name)


# ------------------------------------------------------------------ classification, multi-label, regression

def _require_columns(table, reading, fields: tuple[str, ...], label_field: str, need: bool) -> bool:
    """Checks that the columns named by the reading `fields` (those set) are in `table`, and the label column
    too when the split is scored; returns whether the label column is there."""
    for field in fields:
        if reading[field]:
            table.require(reading[field], field)
    if need:
        table.require(reading[label_field], label_field)
    return reading[label_field] in table.columns


def _text(table, line: int, row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:
        raise InputError(f"{table.where(line)}: no {column!r} value; every row needs its text.")
    if isinstance(value, (dict, list)):
        raise InputError(f"{table.where(line)}: the {column!r} value is a JSON {type(value).__name__}, not text; give "
                         "the text as a string.")
    return value if isinstance(value, str) else str(value)


def _classification_examples(task, table, split: str, need: bool) -> list[ClassificationExample]:
    reading = task.reading
    has_labels = _require_columns(table, reading, ("text_column", "text_pair_column"), "label_column", need)
    examples = []
    for line, row in table.rows:
        where = table.where(line)
        text_b = _text(table, line, row, reading["text_pair_column"]) if reading["text_pair_column"] else None
        value = row.get(reading["label_column"]) if has_labels else None
        blank = value is None or isinstance(value, str) and not value.strip()
        # In a file that is only predicted, a blank cell is an unlabelled row (multi-label: no labels).
        unlabelled = not has_labels or blank and not need and task.kind != "multi_label_classification"
        label = None if unlabelled else _parse_label(task, value, where, need)
        examples.append(ClassificationExample(guid=f"{split}-{len(examples)}", text_a=_text(table, line, row,
                                              reading["text_column"]), text_b=text_b, label=label))
    return examples


def _parse_label(task, value, where: str, need: bool = True):
    if task.kind == "regression":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: score {value!r} is not a number; regression labels are numbers such as "
                             "3.8.") from None
        if not math.isfinite(number):
            raise InputError(f"{where}: score {value!r} is not finite; give a real number.")
        return number
    labels = _cell_labels(task, value, where)
    ids = tuple(sorted({_label_id(task, v, where, need) for v in labels}))
    return ids if task.kind == "multi_label_classification" else ids[0]


def _sentence_examples(task, table, split: str, need: bool) -> list:
    """Rows of texts encoded one by one: text_column, text_pair_column and, for in-batch negatives, an
    optional negative_column; scored and labelled pairs also read label_column."""
    reading, labels = task.reading, label_view(task)
    fields = ("text_column", "text_pair_column", "negative_column")
    columns = [reading[field] for field in fields if reading.get(field)]
    scored = labels.kind != "sentence_embedding"
    has_labels = _require_columns(table, {**reading, "negative_column": reading.get("negative_column", "")},
                                  fields, "label_column", need and scored) and scored
    examples = []
    for line, row in table.rows:
        value = row.get(reading["label_column"]) if has_labels else None
        blank = value is None or isinstance(value, str) and not value.strip()
        label = None if blank and not need or not has_labels else _parse_label(labels, value, table.where(line), need)
        examples.append(SentenceExample(guid=f"{split}-{len(examples)}", label=label,
                                        texts=tuple(_text(table, line, row, column) for column in columns)))
    return examples


# ------------------------------------------------------------------ token classification

def _token_sentences(task, path: str, fmt: str, need: bool, flag: str = "--config.data.{}=") -> list[tuple[int, tuple[str, ...], tuple[str, ...] | None]]:
    """(line, words, tags or None) of every sentence."""
    if fmt == "conll":
        return _conll_sentences(path, need)
    table = table_files.read_table(path, fmt, flag)
    reading = task.reading
    has_tags = _require_columns(table, reading, ("tokens_column",), "tags_column", need)
    sentences = []
    for line, row in table.rows:
        where = table.where(line)
        words = _token_list(row.get(reading["tokens_column"]), where, "tokens")
        tags, value = None, row.get(reading["tags_column"]) if has_tags else None
        if value is None and need:
            raise InputError(f"{where}: no {reading['tags_column']!r} value; every training and validation row "
                             "needs its tags.")
        if value is not None:
            tags = tuple(_tag_name(task, t, where) for t in _token_list(value, where, "tags"))
            if len(tags) != len(words):
                raise InputError(f"{where}: {len(words)} tokens but {len(tags)} tags; give one tag per token.")
        if words:
            sentences.append((line, words, tags))
    return sentences


def _token_list(value, where: str, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    raise InputError(f"{where}: {what} must be a list or a space-separated string, got {value!r}.")


def _tag_name(task, value: str, where: str) -> str:
    """A tag as written; a number indexes config.data.label_names (as HF datasets store ner_tags)."""
    if _NUMBER.match(value):
        if not task.label_names:
            raise InputError(f"{where}: tag {value} is a number; give the tag names in order with "
                             "config.data.label_names so numbers can be read as tags.")
        index = int(value)
        if not 0 <= index < len(task.label_names):
            raise InputError(f"{where}: tag number {index} is outside config.data.label_names "
                             f"({len(task.label_names)} names).")
        return task.label_names[index]
    return value


def _conll_sentences(path: str, need: bool):
    """CoNLL columns: the word first, the tag last; blank lines end sentences; -DOCSTART- lines are skipped.
    A file of one column holds words only (text to predict)."""
    sentences, words, tags, start, num_columns = [], [], [], 0, 0
    for number, line in enumerate(table_files.read_text(path).split("\n"), 1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if words:
                sentences.append((start, tuple(words), tuple(tags) if num_columns > 1 else None))
            words, tags = [], []
            continue
        num_columns = num_columns or len(columns)
        if len(columns) != num_columns:
            raise InputError(f"{path}:{number}: {len(columns)} columns in {line.strip()!r} where the file's first "
                             f"token line has {num_columns}; CoNLL lines are 'word ... tag' separated by spaces.")
        if not words:
            start = number
        words.append(columns[0])
        tags.append(columns[-1])
    if words:
        sentences.append((start, tuple(words), tuple(tags) if num_columns > 1 else None))
    if not sentences:
        raise InputError(f"{path} is empty; give one 'word tag' line per token and a blank line between sentences.")
    if need and num_columns < 2:
        raise InputError(f"{path}: lines have one column (words only), but this split is scored; give "
                         "'word tag' lines.")
    return sentences


def _tag_scheme(task, sentences) -> str:
    """The declared tag scheme after checking every training sentence against it; 'auto': the one the tags
    follow (IOBES if any E-/S- tag, IOB1 if an I- tag ever starts an entity, BIO otherwise)."""
    declared = task.tag_scheme
    for line, _, tags in sentences:
        tag_schemes.check_tags(tags, declared, f"{task.local_files['train']}:{line}")
    if declared != "auto":
        return declared
    prefixes = {tag_schemes.split_tag(t, "")[0] for _, _, tags in sentences for t in tags}
    if prefixes & {"E", "S"}:
        return "IOBES"
    for _, _, tags in sentences:
        if tag_schemes.starts_with_inside(tags):
            return "IOB1"
    return "BIO"


def _token_examples(task, path: str, fmt: str, split: str, need: bool, flag: str) -> list[TokenExample]:
    examples = []
    for line, words, tags in _token_sentences(task, path, fmt, need, flag):
        if tags is not None:
            tag_schemes.check_tags(tags, task.tag_scheme or "auto", f"{path}:{line}")
            for tag in tags:
                if tag not in task.label_names:
                    raise InputError(f"{path}:{line}: tag {tag!r} is not one of the training file's tags "
                                     f"({', '.join(task.label_names)}); fix it, or list every tag in "
                                     "config.data.label_names.")
        examples.append(TokenExample(guid=f"{split}-{len(examples)}", words=words, labels=tags))
    return examples


# ------------------------------------------------------------------ QA, multiple choice

def _qa_examples(path: str, fmt: str, need: bool) -> list[QAExample]:
    if fmt not in ("json", "squad"):
        raise InputError(f"{path}: extractive QA reads SQuAD JSON (data -> paragraphs -> qas, v1.1 or v2.0 "
                         "style); give a .json file in that form.")
    return task_files.read_squad_json(path)


def _choice_columns(task, table) -> list[str] | None:
    """The choice columns, or None for a 'choices' list column."""
    declared = list(task.reading["choice_columns"])
    if declared:
        for column in declared:
            table.require(column, "choice_columns")
        return declared
    if "choices" in table.columns:
        return None
    numbered = sorted((int(m.group(2)), c) for c in table.columns if (m := _CHOICE_COLUMN.match(c)))
    if len(numbered) < 2:
        raise InputError(f"{table.path}: no choice columns; name them choice0, choice1, ... (or ending0, ...), give a "
                         f"'choices' list, or list them in config.data.choice_columns. Columns: {', '.join(table.columns)}.")
    return [c for _, c in numbered]


def _choice_examples(task, table, split: str, need: bool) -> list[ChoiceExample]:
    reading = task.reading
    has_labels = _require_columns(table, reading, ("context_column", "question_column"), "label_column", need)
    columns = _choice_columns(task, table)
    examples = []
    for line, row in table.rows:
        where = table.where(line)
        if columns is None:
            choices = row.get("choices")
            if not isinstance(choices, list) or len(choices) < 2:
                raise InputError(f"{where}: 'choices' must be a list of at least two texts.")
            choices = tuple(str(c) for c in choices)
        else:
            choices = tuple(_text(table, line, row, c) for c in columns)
            empty = [c for c, text in zip(columns, choices) if not text.strip()]
            if empty:
                raise InputError(f"{where}: choice column {empty[0]!r} is empty; every row needs all {len(columns)} "
                                 "choices (use a 'choices' list in JSON Lines for rows with fewer).")
        label = None
        if has_labels:
            value = row.get(reading["label_column"])
            text = str(value).strip() if value is not None else ""
            if not _NUMBER.match(text) or not 0 <= int(text) < len(choices):
                raise InputError(f"{where}: label {value!r} is not the number of a choice (0 to {len(choices) - 1}).")
            label = int(text)
        question = _text(table, line, row, reading["question_column"]) if reading["question_column"] else ""
        examples.append(ChoiceExample(guid=f"{split}-{len(examples)}", context=_text(table, line, row,
                                      reading["context_column"]), question=question, choices=choices, label=label))
    first = examples[0] if examples else None
    for (line, _), example in zip(table.rows, examples):
        if len(example.choices) != len(first.choices):
            raise InputError(f"{table.where(line)}: {len(example.choices)} choices where the first row has "
                             f"{len(first.choices)}; every row of a file needs the same number.")
    return examples
