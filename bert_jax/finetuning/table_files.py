"""The user's own labelled files as rows of named columns: CSV, TSV and JSON Lines (or a JSON array).

Every row keeps the line it starts on, so every later complaint (a missing label, an unknown tag, a
label of another type) can name `file:line`. Problems of the file itself (not UTF-8, empty, a row with
more fields than the header, invalid JSON) are `InputError`s here, with the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Any

from bert_jax.config import InputError
from bert_jax.data import corpus

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "json", ".conll": "conll", ".txt": "conll", ".iob": "conll", ".bio": "conll"}


def read_text(path: str, *, encoding: str = "utf-8", newline: str | None = None) -> str:
    """The whole file as text. A file in another encoding (latin-1, cp1252, UTF-16) is an InputError naming
    the line of the first byte that is not UTF-8, not a UnicodeDecodeError from deep inside csv."""
    if not os.path.isfile(path):
        raise InputError(f"{path} is {'a directory' if os.path.isdir(path) else 'not a file'}; give the path of an "
                         "existing data file.")
    with open(path, "rb") as f:
        data = f.read()
    if found := corpus.compression(data[:8]):
        raise InputError(f"{path} is {found[0]}-compressed: decompress it first (`{found[1]} {path}`) and give the "
                         "text file.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{path} is UTF-16; save it as UTF-8 (e.g. `iconv -f utf-16 -t utf-8 {path}`).")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: byte 0x{data[error.start]:02x} is not UTF-8; save the file as UTF-8, e.g. "
                         f"`iconv -f cp1252 -t utf-8 {path} > {path}.utf8` for Windows text (-f latin1 for "
                         "ISO-8859-1).") from None
    if newline is None:  # universal newlines, as open() in text mode would give
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def file_format(path: str, declared: str = "") -> str:
    """The format of `path`: `declared` if set, else from its extension ('json' is SQuAD, a JSON array or
    JSON Lines: `read_table` tells them apart)."""
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory; give the path of a data file.")
    if declared:
        return declared
    extension = os.path.splitext(path)[1].lower()
    if extension not in _EXTENSIONS:
        raise InputError(f"cannot tell the format of {path} from its extension; name it .csv, .tsv, .jsonl, "
                         ".json or .conll, or set --config.data.file_format.")
    return _EXTENSIONS[extension]


@dataclasses.dataclass(frozen=True)
class Table:
    """The rows of one file: `rows[i]` is (the line it starts on, {column: value})."""

    path: str
    columns: tuple[str, ...]
    rows: list[tuple[int, dict[str, Any]]]
    flag: str = "--config.data.{}="  # how the user names a column setting: fine-tuning's flag, predict's

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def require(self, column: str, what: str) -> None:
        """An InputError listing the columns present when `column` is not one of them."""
        if column not in self.columns:
            raise InputError(f"{self.path}: no column {column!r} ({what}); the file has columns "
                             f"{', '.join(map(repr, self.columns)) or 'none'}: name the right one with "
                             f"{self.flag.format(what)}...")


def read_table(path: str, fmt: str, flag: str = "--config.data.{}=") -> Table:
    """Rows of a CSV (RFC 4180 quoting), TSV (no quoting: a tab or newline cannot be inside a field, a quote
    is a plain character) or JSON Lines / JSON array file; CSV and TSV need a header row naming the columns.
    `flag` says how a column setting is given in messages."""
    if fmt in ("csv", "tsv"):
        return dataclasses.replace(_read_delimited(path, fmt), flag=flag)
    if fmt in ("jsonl", "json"):
        return dataclasses.replace(_read_json_rows(path), flag=flag)
    raise InputError(f"{path}: format {fmt!r} holds no table; give a .csv, .tsv or .jsonl file.")


def _read_delimited(path: str, fmt: str) -> Table:
    text = read_text(path, encoding="utf-8-sig", newline="")
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text), strict=True)
    else:
        reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    separator = "comma" if fmt == "csv" else "tab"
    rows, header, line = [], None, 1
    try:
        for fields in reader:
            start, line = line, reader.line_num + 1
            if not any(field.strip() for field in fields):
                continue  # blank lines
            if header is None:
                header = tuple(field.strip() for field in fields)
                _check_header(path, header)
                continue
            if len(fields) != len(header):
                raise InputError(f"{path}:{start}: {len(fields)} {separator}-separated fields where the header has "
                                 f"{len(header)} ({', '.join(header)}); a stray {separator} or quote in the text? "
                                 "Fix or delete that row.")
            rows.append((start, dict(zip(header, fields))))
    except csv.Error as error:
        raise InputError(f"{path}:{reader.line_num}: not valid CSV ({error}); quote fields that hold commas, "
                         "quotes or newlines as RFC 4180 says.") from None
    if header is None:
        raise InputError(f"{path} is empty; give a {fmt.upper()} file with a header row and one example per row.")
    if not rows:
        raise InputError(f"{path} has a header but no rows; give at least one example.")
    return Table(path, header, rows)


def _check_header(path: str, header: tuple[str, ...]) -> None:
    if "" in header:
        raise InputError(f"{path}:1: the header {list(header)} has an empty column name; the first row must "
                         "name every column.")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{path}:1: the header names column {repeated[0]!r} twice; give each column its own name.")


def _read_json_rows(path: str) -> Table:
    text = read_text(path, encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        items = _array_items(path, text)
    else:
        items = []
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not valid JSON ({error.msg}); JSON Lines files hold one "
                                 "JSON object per line.") from None
    if not items:
        raise InputError(f"{path} is empty; give one JSON object per line.")
    columns: dict[str, None] = {}
    for number, value in items:
        if not isinstance(value, dict):
            raise InputError(f"{path}:{number}: a JSON {type(value).__name__} where an object "
                             '({"text": ..., "label": ...}) is expected; give one object per line.')
        columns.update(dict.fromkeys(value))
    return Table(path, tuple(columns), items)


def _array_items(path: str, text: str) -> list[tuple[int, Any]]:
    """(the line each element starts on, the element) of a JSON array, so errors can name the line."""
    decoder, items = json.JSONDecoder(), []
    position = text.index("[") + 1
    try:
        while True:
            while position < len(text) and text[position] in " \t\r\n,":
                position += 1
            if position >= len(text) or text[position] == "]":
                break
            value, end = decoder.raw_decode(text, position)
            items.append((text.count("\n", 0, position) + 1, value))
            position = end
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}).") from None
    if position >= len(text) or text[position:].strip() != "]":
        raise InputError(f"{path}: the JSON array is not closed by ']' at the end; give a complete JSON file.")
    return items
