"""Local files of the fine-tuning tasks, read in their official formats into examples.

Formats are the ones people download: the GLUE TSVs written by the GLUE download script, CoNLL-2003
column files, the SQuAD v1.1/v2.0 JSON and the swagaf CSVs. Labels become ids in TFDS's order, so a
model fine-tuned on local files and one fine-tuned on the TFDS dataset agree. Every problem is an
`InputError` naming the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import TYPE_CHECKING

from bert_jax.config import InputError
from bert_jax.finetuning.qa import Answer, QAExample
from bert_jax.finetuning.table_files import read_text

if TYPE_CHECKING:  # tasks.py imports this module
    from bert_jax.finetuning.tasks import TaskSpec


@dataclasses.dataclass(frozen=True)
class SentenceExample:
    """Texts encoded one by one (anchor, positive[, negative], or a pair) and a label: a gold similarity
    score (float), a class id, or None (in-batch negatives need none; unlabelled test rows)."""

    guid: str
    texts: tuple[str, ...]
    label: int | float | None


@dataclasses.dataclass(frozen=True)
class ClassificationExample:
    """A sentence or sentence pair; `label` is a class id, a float (regression), or None (unlabeled test)."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float | None


@dataclasses.dataclass(frozen=True)
class TokenExample:
    """A sentence as words with one tag string per word (CoNLL NER)."""

    guid: str
    words: tuple[str, ...]
    labels: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
    """SWAG: `context` (sent1) is followed by `question` (the start of sent2) and one of `choices`."""

    guid: str
    context: str
    question: str
    choices: tuple[str, ...]
    label: int | None


def _needs_labels(task: TaskSpec, split: str) -> bool:
    """The training split and the dev splits are scored, so their files must carry labels; test files need not."""
    return split == task.train_split or split in task.eval_splits


def _valid_labels(task: TaskSpec) -> str:
    return ", ".join(f"{name!r} (or {i})" for i, name in enumerate(task.label_names))


def parse_label(value: str, task: TaskSpec, where: str) -> int | float:
    """A label as written in a file (class name, class id, or STS-B score) -> the id or float we train on."""
    if task.kind == "regression":
        try:
            return float(value)
        except ValueError:
            raise InputError(f"{where}: score {value!r} is not a number; {task.name} scores are floats "
                             "such as 3.8.") from None
    if value in task.label_names:
        return task.label_names.index(value)
    if value.isdigit() and int(value) < len(task.label_names):
        return int(value)
    raise InputError(f"{where}: label {value!r} is not a {task.name} label; valid labels: "
                     f"{_valid_labels(task)}.")


# ------------------------------------------------------------------ GLUE TSV

# CoLA's train.tsv and dev.tsv are the only GLUE files without a header row.
_COLA_COLUMNS = ("source", "label", "original_mark", "sentence")


def read_glue_tsv(path: str, task: TaskSpec, split: str) -> list[ClassificationExample]:
    """Reads a GLUE TSV, finding columns by their header names; files without a label column give None.

    Read without quoting, like the GLUE baselines: sentences contain bare quote characters.
    `guid` is `{split}-{row}` with rows counted from 0, the `idx` TFDS gives the same row.
    """
    rows = list(csv.reader(io.StringIO(read_text(path, encoding="utf-8-sig", newline="")), delimiter="\t",
                           quoting=csv.QUOTE_NONE))
    if not rows:
        raise InputError(f"{path} is empty; give the {task.name} {split} TSV from the GLUE download.")
    if task.name == "cola" and rows[0][:1] != ["index"]:
        header, first_data_line = _COLA_COLUMNS, 1
    else:
        header, first_data_line = tuple(rows[0]), 2
    missing = [c for c in task.tsv_text_columns if c not in header]
    if missing:
        raise InputError(f"{path}:1: the header {'/'.join(header)} has no column {missing[0]!r}; give the "
                         f"{task.name} TSV as the GLUE download script writes it.")
    text_columns = [header.index(c) for c in task.tsv_text_columns]
    label_column = header.index(task.tsv_label_column) if task.tsv_label_column in header else None
    if label_column is None and _needs_labels(task, split):
        raise InputError(f"{path}:1: the header {'/'.join(header)} has no label column "
                         f"{task.tsv_label_column!r}, but the {split} split is scored; give the {task.name} TSV "
                         "with its labels as the GLUE download script writes it.")
    examples = []
    for line_number, row in enumerate(rows[first_data_line - 1:], first_data_line):
        if not row:
            continue  # a trailing blank line
        where = f"{path}:{line_number}"
        if len(row) != len(header):
            raise InputError(f"{where}: {len(row)} tab-separated columns where {task.name} has "
                             f"{len(header)} ({'/'.join(header)}); fix or delete that row.")
        texts = [row[i] for i in text_columns]
        label = None if label_column is None else parse_label(row[label_column], task, where)
        examples.append(ClassificationExample(guid=f"{split}-{len(examples)}", text_a=texts[0],
                                              text_b=texts[1] if len(texts) > 1 else None, label=label))
    return examples


# ------------------------------------------------------------------ CoNLL-2003

def read_conll(path: str, task: TaskSpec, split: str) -> list[TokenExample]:
    """Reads CoNLL columns: the word first, the NER tag last; blank lines end sentences.

    Accepts the 4-column CoNLL-2003 files (word, POS, chunk, NER) and 2-column ones (word, NER);
    `-DOCSTART-` lines are document markers, not sentences.
    """
    examples: list[TokenExample] = []
    words: list[str] = []
    tags: list[str] = []
    num_columns = 0

    def end_sentence():
        if words:
            examples.append(TokenExample(f"{split}-{len(examples)}", tuple(words), tuple(tags)))
            words.clear()
            tags.clear()

    for line_number, line in enumerate(read_text(path).splitlines(keepends=True), 1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            end_sentence()
            continue
        where = f"{path}:{line_number}"
        num_columns = num_columns or len(columns)
        if len(columns) < 2 or len(columns) != num_columns:
            expected = f"the file's first token line has {num_columns}" if num_columns > 1 else "needs 2 or 4"
            raise InputError(f"{where}: {len(columns)} columns in {line.strip()!r} where {expected}; CoNLL "
                             "lines are 'word ... NER-tag' separated by spaces.")
        if columns[-1] not in task.label_names:
            raise InputError(f"{where}: NER tag {columns[-1]!r} is not a {task.name} tag; valid tags: "
                             f"{', '.join(task.label_names)}.")
        words.append(columns[0])
        tags.append(columns[-1])
    end_sentence()
    return examples


# ------------------------------------------------------------------ SQuAD JSON

def read_squad_json(path: str) -> list[QAExample]:
    """Reads SQuAD v1.1 or v2.0 JSON (data -> paragraphs -> qas); v1.1 questions are all answerable."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); give the SQuAD file "
                         "as downloaded (train-v1.1.json, dev-v2.0.json, ...).") from None
    if not isinstance(data, dict) or "data" not in data:
        raise InputError(f"{path} is not SQuAD JSON: it has no top-level 'data' list; give the SQuAD "
                         "v1.1/v2.0 file as downloaded.")
    examples = []
    where = f"{path}: data"
    try:
        for article_index, article in enumerate(data["data"]):
            where = f"{path}: data[{article_index}]"
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    where = f"{path}: question id {qa['id']!r}"
                    answers = tuple(Answer(text=a["text"], start=_answer_start(a["answer_start"], where))
                                    for a in qa["answers"])
                    for answer in answers:
                        if not 0 <= answer.start <= len(context) - len(answer.text):
                            raise InputError(f"{where}: answer_start {answer.start} puts {answer.text!r} "
                                             f"outside its {len(context)}-character context; fix answer_start or the "
                                             "answer text.")
                    examples.append(QAExample(qid=qa["id"], question=qa["question"], context=context,
                                              answers=answers, is_impossible=bool(qa.get("is_impossible"))))
    except (KeyError, TypeError) as error:
        raise InputError(f"{where}: not in SQuAD form ({type(error).__name__}: {error}); each article "
                         "needs paragraphs with context and qas (id, question, answers).") from None
    return examples


def _answer_start(value, where: str) -> int:
    """A character offset: an int, or a string or float that is one ("17", 17.0); anything else is named."""
    try:
        start = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        start = None
    if start is None or (isinstance(value, float) and value != start):
        raise InputError(f"{where}: answer_start {value!r} is not a character offset; give the answer's start "
                         "as an integer index into the context.")
    return start


# ------------------------------------------------------------------ SWAG CSV

_SWAG_ENDINGS = ("ending0", "ending1", "ending2", "ending3")


def read_swag_csv(path: str, task: TaskSpec, split: str) -> list[ChoiceExample]:
    """Reads a swagaf CSV (train.csv, val.csv, test.csv) by its header names; test.csv has no label."""
    reader = csv.reader(io.StringIO(read_text(path, newline="")))
    header = next(reader, None)
    if header is None:
        raise InputError(f"{path} is empty; give the SWAG {split} CSV from the swagaf repository.")
    missing = [c for c in ("sent1", "sent2") + _SWAG_ENDINGS if c not in header]
    if missing:
        raise InputError(f"{path}:1: the header has no column {missing[0]!r}; give the swagaf CSV with "
                         "its header (video-id, fold-ind, startphrase, sent1, sent2, gold-source, "
                         "ending0..ending3, label).")
    column = {name: i for i, name in enumerate(header)}
    if "label" not in column and _needs_labels(task, split):
        raise InputError(f"{path}:1: the header has no 'label' column, but the {split} split is scored; give "
                         "the swagaf CSV with its labels (test.csv alone comes without).")
    examples = []
    for row in reader:
        if not row:
            continue
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            raise InputError(f"{where}: {len(row)} comma-separated columns where the header has "
                             f"{len(header)}; fix or delete that row.")
        label = parse_label(row[column["label"]], task, where) if "label" in column else None
        examples.append(ChoiceExample(
            guid=f"{split}-{len(examples)}", context=row[column["sent1"]], question=row[column["sent2"]],
            choices=tuple(row[column[e]] for e in _SWAG_ENDINGS), label=label))
    return examples
