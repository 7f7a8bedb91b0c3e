"""Readers for labelled text files: TSV, CSV and JSON Lines."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import re
from importlib import resources
from typing import NamedTuple

logger = logging.getLogger(__name__)

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}

# Values of `read_examples(on_bad_row=...)`. "skip" drops and counts a row
# it cannot use, and "error" raises `DataError` at the first such row.
ON_BAD_ROW_CHOICES = ("skip", "error")

# The line breaks that `open(..., newline="")` and the csv module split on.
# `str.splitlines` also splits on U+2028, U+0085 and others, which may
# appear inside a text.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

_JSON_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class DataError(ValueError):
    """Raised when a data file cannot be read as labelled examples."""


@dataclasses.dataclass
class Examples:
    """Texts and labels read from one file.

    Attributes:
        path: The file read.
        texts: The kept texts, in file order.
        labels: The label of each kept text, as a string.
        lines: The line number in the file where each kept row starts.
        skipped: Count of dropped rows by reason.
        pairs: The second text of each kept row when a text pair column was
            read, aligned with `texts`; `None` otherwise.
        rows_read: Data rows seen in the file, kept plus skipped. The header
            and blank lines at the end of the file are not rows.
    """

    path: str
    texts: list[str]
    labels: list[str]
    lines: list[int]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    pairs: list[str] | None = None
    rows_read: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def inputs(self) -> list[str] | list[tuple[str, str]]:
        """The model's input per example: the text, or `(text, pair)` for a pair task."""
        return self.texts if self.pairs is None else list(zip(self.texts, self.pairs, strict=True))

    def head(self, count: int) -> Examples:
        """Return the first `count` examples.

        `skipped` and `rows_read` are copied unchanged because they describe
        the whole file, not the examples kept.
        """
        return Examples(
            self.path,
            self.texts[:count],
            self.labels[:count],
            self.lines[:count],
            dict(self.skipped),
            None if self.pairs is None else self.pairs[:count],
            self.rows_read,
        )


def demo_data_paths() -> tuple[str, str]:
    """Return the paths of the demo train and dev files shipped in the package."""
    root = resources.files("fnn_keras") / "demo_data"
    return str(root / "train.tsv"), str(root / "dev.tsv")


def _label_to_string(value) -> str | None:
    # JSON Lines readers reject other types before this; see _rows_from_jsonl.
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


class _Row(NamedTuple):
    """One data row as a format reader found it, before the common checks."""

    line: int
    text: object = None
    pair: object = None
    label: object = None
    # Skip reason, the key counted in `Examples.skipped`.
    problem: str | None = None
    # The reason with row details, for the on_bad_row="error" message.
    detail: str | None = None


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise DataError(f"Data file not found: {path}; check the path.")
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}).") from None


def _decode(path: str, data: bytes, encoding: str) -> str:
    """Decode the whole file, naming the line and byte offset of a bad byte."""
    try:
        content = data.decode(encoding)
    except LookupError:
        raise DataError(
            f"{path}: {encoding!r} is not a known text encoding; pass --encoding with a "
            "Python codec name, for example utf-8, gb18030 or latin-1."
        ) from None
    except UnicodeDecodeError as error:
        # The bytes before the bad one decoded cleanly, so their line breaks
        # give the line number.
        prefix = data[: error.start].decode(encoding, errors="replace")
        line = len(_LINE_BREAK.findall(prefix)) + 1
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            advice = "the file starts with a UTF-16 byte-order mark, so pass --encoding utf-16"
        else:
            advice = (
                "pass --encoding with the file's encoding, "
                "for example --encoding gb18030 or --encoding latin-1"
            )
        raise DataError(
            f"{path}:{line}: cannot decode byte {data[error.start]:#04x} at byte offset "
            f"{error.start} (0-based) as {encoding!r} ({error.reason}); {advice}."
        ) from None

    # Decoding UTF-8 leaves its byte-order mark as U+FEFF, and so do other
    # codecs that do not strip a mark themselves.
    return content.removeprefix("\ufeff")


def _parse_delimited(path: str, content: str, fmt: str):
    """Yield `(line, fields)` for each row, where `line` is where the row starts."""
    delimiter = "\t" if fmt == "tsv" else ","
    # TSV files of the GLUE and CLUE kind are never quoted and contain stray
    # quote characters, so TSV is read with quoting off; CSV uses standard
    # quoting (fields may hold the delimiter, doubled quotes and newlines).
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    # newline="" splits on \r\n, \r and \n and keeps line breaks inside
    # quoted fields as they are, which is what the csv module expects.
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, quoting=quoting)
    # `reader.line_num` is the line where a row ends, which differs from the
    # line where it starts for quoted fields holding line breaks.
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # NOTE: the csv module rejects a field over csv.field_size_limit()
            # characters (131072 by default), so a longer text fails here too.
            raise DataError(
                f"{path}:{start}: cannot parse the row starting on this line ({error}); "
                "check it for an unclosed quote or an overlong field."
            ) from None
        yield start, fields
        start = reader.line_num + 1


def _column_indexes(path: str, header: list[str], columns: dict[str, str | None]) -> list:
    """Return the header index of each requested column, or None where none was requested."""
    indexes = []
    for flag, column in columns.items():
        if column is None:
            indexes.append(None)
            continue
        count = header.count(column)
        if count == 0:
            raise DataError(
                f"{path}: column {column!r} not found in the header {header!r}; "
                f"pass {flag} with one of these column names."
            )
        if count > 1:
            raise DataError(
                f"{path}: column {column!r} appears {count} times in the header {header!r}; "
                "rename the duplicate columns."
            )
        indexes.append(header.index(column))
    return indexes


def _rows_from_delimited(path, content, fmt, text_column, pair_column, label_column):
    rows = _parse_delimited(path, content, fmt)
    _, header = next(rows)
    header = [name.strip() for name in header]
    columns = {
        "--text-column": text_column,
        "--text-pair-column": pair_column,
        "--label-column": label_column,
    }
    text_index, pair_index, label_index = _column_indexes(path, header, columns)
    expected = len(header)

    # Blank lines count as skipped rows only when a data row follows them,
    # so blank lines at the end of the file are not rows at all.
    blank_lines = []
    for line, fields in rows:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            blank_lines.append(line)
            continue
        for blank_line in blank_lines:
            yield _Row(blank_line, problem="blank line")
        blank_lines.clear()

        label_breaks = len(fields) == expected and any(
            "\n" in fields[index] or "\r" in fields[index]
            for index in range(expected)
            if index not in (text_index, pair_index)
        )
        if len(fields) != expected or label_breaks:
            if label_breaks or any("\n" in field or "\r" in field for field in fields):
                # A quote that is never closed swallows the lines after it
                # into one field; skipping that "row" would drop them all.
                raise DataError(
                    f"{path}:{line}: a quoted field starting on this line spans several "
                    f"lines and leaves a row of {len(fields)} field(s) where {expected} are "
                    "expected, or a line break in a column other than the texts; check for an "
                    "unclosed quote."
                )
            yield _Row(
                line,
                problem=f"wrong number of fields (expected {expected})",
                detail=f"wrong number of fields (expected {expected}, found {len(fields)})",
            )
            continue

        pair = None if pair_index is None else fields[pair_index]
        yield _Row(line, fields[text_index], pair, fields[label_index])


def _rows_from_jsonl(path, content, text_column, pair_column, label_column):
    for line, raw in enumerate(io.StringIO(content, newline=""), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}:{line}: invalid JSON ({error.msg} at column {error.colno}); "
                "each line must be one JSON object."
            ) from None
        if not isinstance(record, dict):
            found = _JSON_TYPE_NAMES.get(type(record), type(record).__name__)
            raise DataError(
                f"{path}:{line}: expected a JSON object, found a JSON {found}; "
                "each line must be one JSON object."
            )

        text = record.get(text_column)
        pair = None if pair_column is None else record.get(pair_column)
        checks = (("text", text_column, text), ("text pair", pair_column, pair))
        problem = None
        for role, key, value in checks:
            if value is not None and not isinstance(value, str):
                found = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
                problem = f"{role} is not a string"
                detail = f"{role} is not a string (key {key!r} is a JSON {found})"
                break
        label = record.get(label_column)
        if problem is None and not (
            label is None
            or isinstance(label, str)
            or (isinstance(label, int) and not isinstance(label, bool))
            or (isinstance(label, float) and label.is_integer())
        ):
            found = _JSON_TYPE_NAMES.get(type(label), type(label).__name__)
            if isinstance(label, float):
                found = "number with a fraction"
            problem = "label is not a string or integer"
            detail = f"{problem} (key {label_column!r} is a JSON {found})"
        if problem is not None:
            yield _Row(line, problem=problem, detail=detail)
            continue
        yield _Row(line, text, pair, label)


def _find_problem(row: _Row, label: str | None, has_pairs: bool) -> str | None:
    if row.text is None or not row.text.strip():
        return "empty text"
    if has_pairs and (row.pair is None or not row.pair.strip()):
        return "empty text pair"
    if label is None:
        return "missing label"
    return None


def _log_skipped(path: str, skipped: dict[str, int], skipped_lines: dict[str, list[int]]):
    reasons = []
    for problem, count in sorted(skipped.items()):
        lines = skipped_lines[problem]
        shown = ", ".join(str(x) for x in lines[:5]) + (", ..." if len(lines) > 5 else "")
        reasons.append(f"{count} with {problem} (line {shown})")
    logger.warning("%s: skipped %d row(s): %s", path, sum(skipped.values()), "; ".join(reasons))


def check_on_bad_row(path: str, on_bad_row: str) -> None:
    """Raise `DataError` unless `on_bad_row` is one of `ON_BAD_ROW_CHOICES`.

    Example:

    ```python
    check_on_bad_row("train.tsv", "skip")
    ```
    """
    if on_bad_row not in ON_BAD_ROW_CHOICES:
        choices = " or ".join(repr(choice) for choice in ON_BAD_ROW_CHOICES)
        raise DataError(
            f"{path}: invalid on_bad_row {on_bad_row!r}; pass {choices} (the --on-bad-row flag)."
        )


def read_examples(
    path: str,
    text_column: str = "text",
    label_column: str = "label",
    *,
    text_pair_column: str | None = None,
    encoding: str = "utf-8",
    on_bad_row: str = "skip",
) -> Examples:
    """Read `(text, label)` or `(text, text pair, label)` rows from a TSV, CSV or JSON Lines file.

    The format follows the extension:

    - `.tsv`: tab-separated with quoting off, as GLUE and CLUE ship it. A
      quote character is an ordinary character, so `"a` is read as the
      text `"a`, and a field can hold neither a tab nor a line break.
    - `.csv`: comma-separated with standard quoting. A quoted field may hold
      commas, doubled quotes (`""` for `"`) and line breaks, which are kept
      as they are in the file.
    - `.jsonl` or `.json`: one JSON object per line. Blank lines are ignored.

    Delimited files need a header row. Header names are stripped of
    whitespace, and texts are kept verbatim. Labels are returned as strings:
    JSON `1` and `1.0` become `"1"`, and `true` becomes `"true"`.

    The whole file is decoded with `encoding`. A leading byte-order mark
    (U+FEFF) is dropped, and lines may end in `\\n`, `\\r\\n` or `\\r`.

    A bad row has an empty or whitespace-only text or text pair, a missing
    label, the wrong number of fields, or (in JSON Lines) a text that is not
    a string. A blank line in a delimited file is a bad row unless only
    blank lines follow it.

    Args:
        path: File to read.
        text_column: Column or key holding the text.
        label_column: Column or key holding the label.
        text_pair_column: Column or key holding the second text of a
            sentence-pair task. Defaults to `None`, which reads no pairs.
        encoding: Python codec name of the file, for example `"utf-8"`,
            `"gb18030"` or `"latin-1"`. Defaults to `"utf-8"`.
        on_bad_row: `"skip"` drops bad rows, counts them by reason in
            `Examples.skipped` and logs a warning with their line numbers.
            `"error"` raises `DataError` at the first one. Defaults to
            `"skip"`.

    Returns:
        `Examples` with labels as strings, and `pairs` filled when
        `text_pair_column` is given.

    Raises:
        DataError: The file is missing, empty, has an unknown extension or
            encoding, contains a byte that `encoding` cannot decode, lacks a
            column, contains invalid JSON or an unclosed CSV quote, contains
            a bad row with `on_bad_row="error"`, or has no usable rows.
            `on_bad_row` is not one of `ON_BAD_ROW_CHOICES`. Every message is
            one line naming the file, and the line where there is one.

    Example:

    ```python
    examples = read_examples("train.tsv")
    examples.texts[0], examples.labels[0]

    pairs = read_examples(
        "afqmc.jsonl", "sentence1", text_pair_column="sentence2", encoding="gb18030"
    )
    pairs.texts[0], pairs.pairs[0], pairs.labels[0]
    ```
    """
    check_on_bad_row(path, on_bad_row)
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory; pass a .tsv, .csv or .jsonl file.")
    extension = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(extension)
    if fmt is None:
        hint = " (for a CoNLL file, train with --task tagging)" if extension == ".conll" else ""
        raise DataError(f"{path}: unknown file type {extension!r}; use .tsv, .csv or .jsonl{hint}.")

    content = _decode(path, _read_bytes(path), encoding)
    if not content.strip():
        needs = "one JSON object per line" if fmt == "jsonl" else "a header row and data rows"
        raise DataError(f"{path} is empty; it needs {needs}.")

    if fmt == "jsonl":
        rows = _rows_from_jsonl(path, content, text_column, text_pair_column, label_column)
    else:
        rows = _rows_from_delimited(path, content, fmt, text_column, text_pair_column, label_column)

    has_pairs = text_pair_column is not None
    examples = Examples(path, [], [], [], {}, [] if has_pairs else None)
    skipped_lines: dict[str, list[int]] = {}
    for row in rows:
        examples.rows_read += 1
        problem, detail, label = row.problem, row.detail, None
        if problem is None:
            label = _label_to_string(row.label)
            problem = _find_problem(row, label, has_pairs)
        if problem is not None:
            if on_bad_row == "error":
                raise DataError(
                    f"{path}:{row.line}: {detail or problem}; fix the row or pass "
                    "--on-bad-row skip to skip such rows."
                )
            examples.skipped[problem] = examples.skipped.get(problem, 0) + 1
            skipped_lines.setdefault(problem, []).append(row.line)
            continue
        examples.texts.append(row.text)
        examples.labels.append(label)
        examples.lines.append(row.line)
        if has_pairs:
            examples.pairs.append(row.pair)

    if examples.skipped:
        _log_skipped(path, examples.skipped, skipped_lines)
    if not examples.texts:
        if examples.rows_read == 0:
            raise DataError(f"{path} has no data rows; add rows below the header.")
        required = "a text, a text pair and a label" if has_pairs else "both a text and a label"
        flags = "--text-column, --text-pair-column" if has_pairs else "--text-column"
        raise DataError(
            f"{path} has no rows with {required} (all {examples.rows_read} data rows skipped); "
            f"check {flags} and --label-column."
        )
    return examples
