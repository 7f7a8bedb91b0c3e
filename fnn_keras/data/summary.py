"""Summaries of the data read: rows, labels, duplicates and token lengths."""

from __future__ import annotations

import collections
import logging

import numpy as np
import tensorflow as tf

from fnn_keras.data.pipeline import is_pair_input

logger = logging.getLogger(__name__)

# Special tokens BERT adds to one text ([CLS] and [SEP]) and to a pair
# ([CLS] a [SEP] b [SEP]).
SPECIAL_TOKENS = 2
PAIR_SPECIAL_TOKENS = 3

# Above this fraction of truncated texts the summary warns and suggests a
# sequence length.
TRUNCATION_WARNING_FRACTION = 0.05
COVERAGE_PERCENTILE = 95


def token_lengths(tokenizer, texts, batch_size: int = 1024) -> np.ndarray:
    """Count the tokens of each text, special tokens included, before truncation.

    Args:
        tokenizer: The keras-hub tokenizer of the backbone.
        texts: The texts, or `(text, text_pair)` tuples; a pair counts the
            tokens of both texts.
        batch_size: Texts tokenized per call.

    Returns:
        An int array of shape `(len(texts),)`.

    Example:

    ```python
    token_lengths(tokenizer, ["a good film"])  # array([5])
    ```
    """
    if is_pair_input(texts):
        first, second = ([pair[i] for pair in texts] for i in (0, 1))
        first, second = (
            token_lengths(tokenizer, segment, batch_size) for segment in (first, second)
        )
        return first + second + PAIR_SPECIAL_TOKENS - 2 * SPECIAL_TOKENS
    lengths = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(tf.constant(texts[start : start + batch_size]))
        # keras-hub returns Python lists for eager string batches.
        lengths.extend(len(row) for row in tokens)
    return np.array(lengths, dtype=np.int64) + SPECIAL_TOKENS


def summarize_split(
    examples, tokenizer, sequence_length: int, lengths=None, max_positions: int | None = None
) -> dict:
    """Summarize one split: rows read, kept and skipped, labels, duplicates and lengths.

    Args:
        examples: `Examples` from `read_examples`.
        tokenizer: The keras-hub tokenizer of the backbone.
        sequence_length: The configured maximum tokens per text.
        lengths: `token_lengths` of `examples.texts`, when the caller has
            them already; `None` computes them.
        max_positions: The backbone's maximum sequence length, which caps
            the suggested `sequence_length`; `None` leaves it uncapped.

    Returns:
        A JSON-ready dict. `duplicates` counts texts equal to an earlier
        text of the split; `duplicates_with_other_label` counts those whose
        label differs from the earlier one. `suggested_sequence_length` is
        the length that covers 95% of the texts, capped at `max_positions`;
        `suggested_coverage` is the fraction of texts it covers.

    Example:

    ```python
    summarize_split(read_examples("dev.tsv"), tokenizer, 128)
    ```
    """
    if lengths is None:
        lengths = token_lengths(tokenizer, examples.inputs)
    truncated = int((lengths > sequence_length).sum())
    token_length = {
        f"p{q}": int(np.percentile(lengths, q, method="nearest")) for q in (50, 90, 95, 99)
    }
    token_length["max"] = int(lengths.max())
    suggested = token_length[f"p{COVERAGE_PERCENTILE}"]
    if max_positions is not None:
        suggested = min(suggested, max_positions)
    first_label = {}
    duplicates = conflicting = 0
    for text, label in zip(examples.inputs, examples.labels, strict=True):
        if text in first_label:
            duplicates += 1
            conflicting += first_label[text] != label
        else:
            first_label[text] = label
    skipped = dict(examples.skipped)
    return {
        "path": examples.path,
        "rows_read": examples.rows_read,
        "kept": len(examples),
        "skipped": skipped,
        "label_counts": dict(collections.Counter(examples.labels).most_common()),
        "duplicates": duplicates,
        "duplicates_with_other_label": conflicting,
        "token_length": token_length,
        "sequence_length": sequence_length,
        "truncated": truncated,
        "truncated_fraction": round(truncated / len(examples), 4),
        "suggested_sequence_length": int(suggested),
        "suggested_coverage": round(float((lengths <= suggested).mean()), 4),
    }


def shared_texts(train_inputs: list, dev_inputs: list) -> int:
    """Count the dev examples whose text (or text pair) also occurs in the training data."""
    seen = set(train_inputs)
    return sum(text in seen for text in dev_inputs)


def log_summary(name: str, summary: dict) -> None:
    """Log a split summary; warn about skipped rows, duplicates and truncation."""
    logger.info(
        "%s: %d of %d rows kept from %s; labels %s; tokens p50=%d p95=%d max=%d",
        name,
        summary["kept"],
        summary["rows_read"],
        summary["path"],
        summary["label_counts"],
        summary["token_length"]["p50"],
        summary["token_length"]["p95"],
        summary["token_length"]["max"],
    )
    if summary["duplicates"]:
        logger.warning(
            "%s: %d text(s) repeat an earlier text of the split (%d with another label).",
            name,
            summary["duplicates"],
            summary["duplicates_with_other_label"],
        )
    if not summary["truncated"]:
        return
    message = "%s: %d of %d texts (%.1f%%) are longer than sequence_length=%d tokens and will be truncated."
    args = [
        name,
        summary["truncated"],
        summary["kept"],
        100 * summary["truncated_fraction"],
        summary["sequence_length"],
    ]
    if summary["truncated_fraction"] > TRUNCATION_WARNING_FRACTION:
        suggested = summary["suggested_sequence_length"]
        if suggested > summary["sequence_length"]:
            message += " --sequence-length %d would cover %.1f%% of the texts."
            args += [suggested, 100 * summary["suggested_coverage"]]
        else:
            message += " The backbone's maximum, %d, is the longest possible."
            args += [suggested]
        logger.warning(message, *args)
    else:
        logger.info(message, *args)


def summary_markdown(summary: dict) -> str:
    """Render the data summary of a run as a Markdown table, for TensorBoard.

    Args:
        summary: The dict the trainer writes to `data_summary.json`: one
            `summarize_split` entry under `train` and `dev`, and optionally
            `dev_texts_in_train` and `class_weights`.

    Returns:
        Markdown text.

    Example:

    ```python
    tf.summary.text("data_summary", summary_markdown(summary), step=0)
    ```
    """
    splits = [name for name in ("train", "dev") if name in summary]
    rows = [
        ("file", lambda s: f"`{s['path']}`"),
        ("rows read", lambda s: s["rows_read"]),
        ("kept", lambda s: s["kept"]),
        (
            "skipped",
            lambda s: ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or "0",
        ),
        ("labels", lambda s: ", ".join(f"{k}: {v}" for k, v in s["label_counts"].items())),
        (
            "duplicates (other label)",
            lambda s: f"{s['duplicates']} ({s['duplicates_with_other_label']})",
        ),
        (
            "tokens p50 / p90 / p95 / p99 / max",
            lambda s: "{p50} / {p90} / {p95} / {p99} / {max}".format(**s["token_length"]),
        ),
        (
            "truncated at sequence length",
            lambda s: (
                f"{s['truncated']} ({100 * s['truncated_fraction']:.1f}%) at {s['sequence_length']}"
            ),
        ),
        (
            "suggested sequence length (covers)",
            lambda s: f"{s['suggested_sequence_length']} ({100 * s['suggested_coverage']:.1f}%)",
        ),
    ]
    lines = ["| | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for title, cell in rows:
        lines.append(f"| {title} | " + " | ".join(str(cell(summary[n])) for n in splits) + " |")
    if "dev_texts_in_train" in summary:
        lines.append("")
        lines.append(f"Dev texts also in the training data: {summary['dev_texts_in_train']}.")
    if "class_weights" in summary:
        weights = ", ".join(f"{k}: {v:.4g}" for k, v in summary["class_weights"].items())
        lines.append("")
        lines.append(f"Class weights: {weights}.")
    return "\n".join(lines)
