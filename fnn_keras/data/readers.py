"""Readers for labelled text files: TSV, CSV and JSON Lines."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from importlib import resources

logger = logging.getLogger(__name__)

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


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
    """

    path: str
    texts: list[str]
    labels: list[str]
    lines: list[int]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, count: int) -> Examples:
        """Return the first `count` examples."""
        return Examples(
            self.path,
            self.texts[:count],
            self.labels[:count],
            self.lines[:count],
            dict(self.skipped),
        )


def demo_data_paths() -> tuple[str, str]:
    """Return the paths of the demo train and dev files shipped in the package."""
    root = resources.files("fnn_keras") / "demo_data"
    return str(root / "train.tsv"), str(root / "dev.tsv")


def _label_to_string(value) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _read_delimited(path, delimiter, quoting):
    # The line where each row starts; `csv.reader.line_num` gives the line
    # where it ends, which differs for quoted fields holding line breaks.
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file, delimiter=delimiter, quoting=quoting)
        start = 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def _rows_from_delimited(path, fmt, text_column, label_column):
    delimiter = "\t" if fmt == "tsv" else ","
    # TSV files of the GLUE and CLUE kind are never quoted and contain stray
    # quote characters, so TSV is read with quoting off; CSV uses standard
    # quoting (fields may hold the delimiter, doubled quotes and newlines).
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    rows = _read_delimited(path, delimiter, quoting)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError(f"{path} is empty; it needs a header row.") from None
    header = [name.strip() for name in header]
    for column in (text_column, label_column):
        if column not in header:
            raise DataError(
                f"{path}: column {column!r} not found in the header "
                f"({', '.join(header)}). Pass --text-column/--label-column."
            )
    text_index = header.index(text_column)
    label_index = header.index(label_column)
    for line, row in rows:
        if not row:
            yield line, None, None, "blank line"
            continue
        if len(row) != len(header):
            if any("\n" in field for field in row):
                # A quote that is never closed swallows the lines after it
                # into one field; skipping that "row" would drop them all.
                raise DataError(
                    f"{path}:{line}: a quoted field starting on this line spans several "
                    f"lines and leaves a row of {len(row)} fields instead of {len(header)}; "
                    "check for an unclosed quote."
                )
            yield line, None, None, f"wrong number of fields (expected {len(header)})"
            continue
        yield line, row[text_index], row[label_index], None


def _rows_from_jsonl(path, text_column, label_column):
    with open(path, encoding="utf-8-sig") as file:
        for line, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}:{line}: invalid JSON ({error.msg}); each line must be one JSON object."
                ) from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line}: expected a JSON object.")
            text = record.get(text_column)
            if text is not None and not isinstance(text, str):
                yield line, None, None, "text is not a string"
                continue
            yield line, text, record.get(label_column), None


def read_examples(path: str, text_column: str = "text", label_column: str = "label") -> Examples:
    """Read `(text, label)` rows from a TSV, CSV or JSON Lines file.

    The format follows the extension: `.tsv` (tab-separated, unquoted, as
    GLUE and CLUE ship it), `.csv` (comma-separated with standard quoting)
    or `.jsonl`/`.json` (one object per line). Delimited files need a header
    row. Rows with an empty text or label, or the wrong number of fields,
    are skipped and counted in `Examples.skipped`.

    Args:
        path: File to read, UTF-8 (a byte-order mark is accepted).
        text_column: Column or key holding the text.
        label_column: Column or key holding the label.

    Returns:
        `Examples` with labels as strings.

    Raises:
        DataError: The file is missing, undecodable, has no such column, or
            holds no usable rows.

    Example:

    ```python
    examples = read_examples("train.tsv")
    examples.texts[0], examples.labels[0]
    ```
    """
    if not os.path.isfile(path):
        raise DataError(f"Data file not found: {path}")
    extension = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(extension)
    if fmt is None:
        raise DataError(f"{path}: unknown file type {extension!r}; use .tsv, .csv or .jsonl.")

    if fmt == "jsonl":
        rows = _rows_from_jsonl(path, text_column, label_column)
    else:
        rows = _rows_from_delimited(path, fmt, text_column, label_column)

    examples = Examples(path, [], [], [], {})
    skipped_lines: dict[str, list[int]] = {}
    try:
        for line, text, label, problem in rows:
            if problem is None:
                label = _label_to_string(label)
                if text is None or not text.strip():
                    problem = "empty text"
                elif label is None:
                    problem = "missing label"
            if problem is not None:
                examples.skipped[problem] = examples.skipped.get(problem, 0) + 1
                skipped_lines.setdefault(problem, []).append(line)
                continue
            examples.texts.append(text)
            examples.labels.append(label)
            examples.lines.append(line)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: invalid UTF-8 byte {error.object[error.start]:#04x}; "
            "convert the file to UTF-8."
        ) from None
    except csv.Error as error:
        raise DataError(f"{path}: {error}") from None

    if examples.skipped:
        reasons = []
        for problem, count in sorted(examples.skipped.items()):
            lines = skipped_lines[problem]
            shown = ", ".join(str(x) for x in lines[:5]) + (", ..." if len(lines) > 5 else "")
            reasons.append(f"{count} with {problem} (line {shown})")
        logger.warning(
            "%s: skipped %d row(s): %s",
            path,
            sum(examples.skipped.values()),
            "; ".join(reasons),
        )
    if not examples.texts:
        raise DataError(
            f"{path} has no rows with both a text and a label; check --text-column and --label-column."
        )
    return examples
