"""Summaries of the data read: row counts, labels and token lengths."""

from __future__ import annotations

import collections
import logging

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

# Special tokens the single-segment BERT input adds: [CLS] and [SEP].
SPECIAL_TOKENS = 2


def token_lengths(tokenizer, texts: list[str], batch_size: int = 1024) -> np.ndarray:
    """Count the tokens of each text, special tokens included, before truncation.

    Args:
        tokenizer: The keras-hub tokenizer of the backbone.
        texts: The texts.
        batch_size: Texts tokenized per call.

    Returns:
        An int array of shape `(len(texts),)`.

    Example:

    ```python
    token_lengths(tokenizer, ["a good film"])  # array([5])
    ```
    """
    lengths = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(tf.constant(texts[start : start + batch_size]))
        # keras-hub returns Python lists for eager string batches.
        lengths.extend(len(row) for row in tokens)
    return np.array(lengths, dtype=np.int64) + SPECIAL_TOKENS


def summarize_split(examples, tokenizer, sequence_length: int, lengths=None) -> dict:
    """Summarize one split: rows kept and skipped, labels and token lengths.

    Args:
        examples: `Examples` from `read_examples`.
        tokenizer: The keras-hub tokenizer of the backbone.
        sequence_length: The configured maximum tokens per text.
        lengths: `token_lengths` of `examples.texts`, when the caller has
            them already; `None` computes them.

    Returns:
        A JSON-ready dict.

    Example:

    ```python
    summarize_split(read_examples("dev.tsv"), tokenizer, 128)
    ```
    """
    if lengths is None:
        lengths = token_lengths(tokenizer, examples.texts)
    truncated = int((lengths > sequence_length).sum())
    percentiles = {f"p{q}": int(np.percentile(lengths, q, method="nearest")) for q in (50, 95, 99)}
    percentiles["max"] = int(lengths.max())
    return {
        "path": examples.path,
        "kept": len(examples),
        "skipped": dict(examples.skipped),
        "label_counts": dict(collections.Counter(examples.labels).most_common()),
        "token_length": percentiles,
        "truncated": truncated,
    }


def log_summary(name: str, summary: dict, sequence_length: int) -> None:
    """Log a split summary, warning when texts will be truncated."""
    logger.info(
        "%s: %d examples from %s; labels %s; tokens p50=%d p95=%d max=%d",
        name,
        summary["kept"],
        summary["path"],
        summary["label_counts"],
        summary["token_length"]["p50"],
        summary["token_length"]["p95"],
        summary["token_length"]["max"],
    )
    if summary["truncated"]:
        logger.warning(
            "%s: %d of %d texts are longer than sequence_length=%d tokens and will be truncated.",
            name,
            summary["truncated"],
            summary["kept"],
            sequence_length,
        )
