"""CoNLL files for token tagging: sentences of `(token, tag)` lines with BIO tags."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re

from fnn_keras.data.labels import LabelError, LabelVocabulary
from fnn_keras.data.readers import (
    DataError,
    _decode,
    _log_skipped,
    _read_bytes,
    check_on_bad_row,
)

logger = logging.getLogger(__name__)

OUTSIDE_TAG = "O"
# `B-TYPE` or `I-TYPE` with a type of at least one character and no white space.
_ENTITY_TAG = re.compile(r"^[BI]-\S+$")


@dataclasses.dataclass
class Sentences:
    """Tagged sentences read from one CoNLL file.

    Attributes:
        path: The file read.
        tokens: The tokens of each kept sentence, in file order.
        tags: The BIO tag of each token, parallel to `tokens`.
        lines: The line number where each kept sentence starts.
        skipped: Number of sentences skipped, by the reason of their first
            bad line.
        rows_read: Non-blank lines read, kept or not.
    """

    path: str
    tokens: list[list[str]]
    tags: list[list[str]]
    lines: list[int]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    rows_read: int = 0

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def token_count(self) -> int:
        return sum(len(tokens) for tokens in self.tokens)

    def head(self, count: int) -> Sentences:
        """Return the first `count` sentences, with the same skip counts."""
        return dataclasses.replace(
            self,
            tokens=self.tokens[:count],
            tags=self.tags[:count],
            lines=self.lines[:count],
            skipped=dict(self.skipped),
        )


def _line_problem(line: str) -> tuple[str | None, str | None, str | None]:
    """Return `(token, tag, None)` for a good line, or `(None, None, reason)`."""
    fields = line.split("\t")
    if len(fields) != 2:
        return None, None, f"not exactly one tab ({len(fields) - 1} found)"
    token, tag = fields
    if not token:
        return None, None, "empty token"
    if not tag:
        return None, None, "empty tag"
    if tag != OUTSIDE_TAG and not _ENTITY_TAG.match(tag):
        return None, None, "tag not O, B-TYPE or I-TYPE"
    return token, tag, None


def read_conll(path: str, encoding: str = "utf-8", on_bad_row: str = "skip") -> Sentences:
    """Read tagged sentences from a two-column CoNLL file.

    Each line is `token<TAB>tag` with exactly one tab, and a blank line (or
    one of only white space) ends a sentence. Tags are `O`, `B-TYPE` or
    `I-TYPE`. An `I-TYPE` that does not follow `B-TYPE` or `I-TYPE` of the
    same type is accepted: entity scoring treats it as the start of an
    entity, as the conlleval script does. Tokens are kept verbatim, white
    space inside them included. Lines may end in `\\n` or `\\r\\n`, and a
    leading byte-order mark is dropped.

    Args:
        path: File to read.
        encoding: Python codec name of the file. Defaults to `"utf-8"`.
        on_bad_row: `"skip"` drops every sentence that contains a bad line,
            counts the sentences in `Sentences.skipped` by the reason of
            their first bad line, and logs a warning with line numbers.
            `"error"` raises `DataError` at the first bad line. A bad line
            has no tab or more than one, an empty token or tag, or a tag
            other than `O`, `B-TYPE` and `I-TYPE`. Defaults to `"skip"`.

    Returns:
        The `Sentences`.

    Raises:
        DataError: The file is missing, empty or undecodable, contains a
            bad line with `on_bad_row="error"`, or has no usable sentence.
            Messages name the file, and the line where there is one.

    Example:

    ```python
    sentences = read_conll("train.conll")
    sentences.tokens[0], sentences.tags[0]  # ["我", ...], ["O", ...]
    ```
    """
    check_on_bad_row(path, on_bad_row)
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory; pass a CoNLL file (token<TAB>tag lines).")
    content = _decode(path, _read_bytes(path), encoding)
    if not content.strip():
        raise DataError(f"{path} is empty; it needs token<TAB>tag lines, one sentence per block.")

    sentences = Sentences(path, [], [], [])
    skipped_lines: dict[str, list[int]] = {}
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    problem = None

    def close_sentence():
        if not tokens and problem is None:
            return
        if problem is None:
            sentences.tokens.append(list(tokens))
            sentences.tags.append(list(tags))
            sentences.lines.append(start)
        else:
            sentences.skipped[problem] = sentences.skipped.get(problem, 0) + 1
            skipped_lines.setdefault(problem, []).append(start)

    # Split on "\n" only: tokens may be characters such as U+2028 that
    # `str.splitlines` would treat as line breaks.
    for number, line in enumerate(content.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            close_sentence()
            tokens, tags, problem = [], [], None
            continue
        sentences.rows_read += 1
        if not tokens and problem is None:
            start = number
        token, tag, reason = _line_problem(line)
        if reason is not None:
            if on_bad_row == "error":
                raise DataError(
                    f"{path}:{number}: {reason} in {line!r}; write token<TAB>tag with a BIO "
                    "tag, or pass --on-bad-row skip to skip such sentences."
                )
            problem = problem or reason
            continue
        tokens.append(token)
        tags.append(tag)
    close_sentence()

    if sentences.skipped:
        _log_skipped(path, sentences.skipped, skipped_lines)
    if not sentences.tokens:
        raise DataError(
            f"{path} has no usable sentences ({sum(sentences.skipped.values())} skipped); "
            "write token<TAB>tag lines with a blank line after each sentence."
        )
    return sentences


def build_tag_vocabulary(train: Sentences, dev: Sentences) -> LabelVocabulary:
    """Build the tag vocabulary of a tagging run: `O` first, then the other tags sorted.

    Args:
        train: The training sentences; their tags make the vocabulary.
        dev: The dev sentences; each of their tags must be a training tag.

    Returns:
        The `LabelVocabulary`. `O` is id 0 even when no training token is
        tagged `O`.

    Raises:
        LabelError: The training data has no entity tag, or a dev tag is
            not in the training data. The message lists the tags with their
            token counts.

    Example:

    ```python
    vocabulary = build_tag_vocabulary(train, dev)
    vocabulary.labels[:3]  # ["O", "B-EDU", "B-LOC"]
    ```
    """
    counts = collections.Counter(tag for tags in train.tags for tag in tags)
    entity_tags = sorted(tag for tag in counts if tag != OUTSIDE_TAG)
    if not entity_tags:
        raise LabelError(
            f"{train.path}: the training data has no B-TYPE or I-TYPE tags, only "
            f"{OUTSIDE_TAG!r}; tagging needs entities to learn."
        )
    vocabulary = LabelVocabulary([OUTSIDE_TAG, *entity_tags])
    unknown = collections.Counter(
        tag for tags in dev.tags for tag in tags if tag != OUTSIDE_TAG and tag not in counts
    )
    if unknown:
        listed = ", ".join(f"{tag!r} ({count})" for tag, count in unknown.most_common())
        raise LabelError(
            f"{dev.path}: tag(s) not in the training data {train.path}: {listed}. "
            f"Training tags: {', '.join(vocabulary.labels)}. Add training sentences with "
            "these tags or fix the dev file."
        )
    return vocabulary
