"""Writing metrics as `metrics.json` and a readable Markdown report."""

from __future__ import annotations

import json
import os

import numpy as np

from fnn_keras.evaluation.plots import confusion_matrix_png

CONFUSION_IMAGES = {
    "Confusion matrix, counts": "confusion_matrix.png",
    "Confusion matrix, row fractions": "confusion_matrix_normalized.png",
}


def markdown_cell(value) -> str:
    """Return `value` as one Markdown table cell, shown as written.

    A `(text, text_pair)` tuple is joined with " ⟂ ", line breaks become
    spaces, and pipes, backticks, asterisks, underscores and backslashes are
    escaped.

    Example:

    ```python
    markdown_cell("a|b")  # "a\\|b"
    ```
    """
    if isinstance(value, (tuple, list)):
        value = " ⟂ ".join(value)
    text = str(value).replace("\\", "\\\\").replace("\n", " ")
    for character in "|`*_":
        text = text.replace(character, "\\" + character)
    return text


def per_label_table(metrics: dict) -> str:
    """Render the per-label precision, recall, F1 and support as a Markdown table.

    The table ends with macro and support-weighted averages.

    Example:

    ```python
    print(per_label_table(classification_metrics(y, predicted, ["neg", "pos"])))
    ```
    """
    rows = [metrics["per_label"][name] for name in metrics["labels"]]
    support = np.array([row["support"] for row in rows], dtype=np.float64)
    weights = support if support.sum() > 0 else None
    lines = [
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, row in zip(metrics["labels"], rows, strict=True):
        lines.append(
            f"| {markdown_cell(name)} | {row['precision']:.4f} | {row['recall']:.4f} "
            f"| {row['f1']:.4f} | {row['support']} |"
        )
    for average, factors in (("macro average", None), ("weighted average", weights)):
        values = [
            np.average([row[key] for row in rows], weights=factors)
            for key in ("precision", "recall", "f1")
        ]
        lines.append(
            f"| {average} | {values[0]:.4f} | {values[1]:.4f} | {values[2]:.4f} "
            f"| {int(support.sum())} |"
        )
    return "\n".join(lines)


def format_report(metrics: dict, title: str = "Evaluation", images: dict | None = None) -> str:
    """Render metrics from `classification_metrics` as Markdown.

    Args:
        metrics: The dict `classification_metrics` returns, optionally with
            `loss`, `split` and `threshold` added.
        title: Heading of the report.
        images: Caption to file name (relative to the report) of pictures
            to embed, such as the confusion matrices.

    Returns:
        Markdown text with the summary, per-label table and confusion matrix.

    Example:

    ```python
    print(format_report(metrics))
    ```
    """
    labels = metrics["labels"]
    lines = [f"# {title}", ""]
    if metrics.get("split"):
        lines.append(f"- data: {metrics['split']}")
    lines += [
        f"- examples: {metrics['examples']}",
        f"- accuracy: {metrics['accuracy']:.4f}",
        f"- macro-F1: {metrics['macro_f1']:.4f}",
        f"- weighted-F1: {metrics['weighted_f1']:.4f}",
    ]
    if "loss" in metrics:
        lines.append(f"- loss: {metrics['loss']:.4f}")
    if metrics.get("threshold") is not None:
        lines.append(
            f"- decision threshold: {labels[1]} when its probability is at least "
            f"{metrics['threshold']:.4f}"
        )
    lines += ["", per_label_table(metrics), ""]
    lines += [
        "Confusion matrix (rows: true label, columns: predicted label):",
        "",
        "| true \\ predicted | " + " | ".join(markdown_cell(x) for x in labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for name, row in zip(labels, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {markdown_cell(name)} | " + " | ".join(str(x) for x in row) + " |")
    for caption, file_name in (images or {}).items():
        lines += ["", f"![{caption}]({file_name})"]
    return "\n".join(lines) + "\n"


def write_report(metrics: dict, directory: str, title: str = "Evaluation") -> tuple:
    """Write `metrics.json`, `report.md` and the confusion-matrix images into a directory.

    Args:
        metrics: The dict `classification_metrics` returns, optionally with
            `loss`, `split` and `threshold` added.
        directory: Existing directory to write into.
        title: Heading of the Markdown report.

    Returns:
        The paths `(metrics_json, report_md)`. The images
        `confusion_matrix.png` (counts) and `confusion_matrix_normalized.png`
        (row fractions) lie beside them.

    Example:

    ```python
    write_report(metrics, "exported/my-run")
    ```
    """
    metrics_path = os.path.join(directory, "metrics.json")
    report_path = os.path.join(directory, "report.md")
    with open(metrics_path, "w", encoding="utf-8") as file:
        json.dump(metrics, file, ensure_ascii=False, indent=2)
    for caption, file_name in CONFUSION_IMAGES.items():
        png = confusion_matrix_png(
            metrics["confusion_matrix"], metrics["labels"], normalize="fractions" in caption
        )
        with open(os.path.join(directory, file_name), "wb") as file:
            file.write(png)
    with open(report_path, "w", encoding="utf-8") as file:
        file.write(format_report(metrics, title, images=CONFUSION_IMAGES))
    return metrics_path, report_path
