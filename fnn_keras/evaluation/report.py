"""Writing metrics as `metrics.json` and a readable Markdown report."""

from __future__ import annotations

import json
import os


def format_report(metrics: dict, title: str = "Evaluation") -> str:
    """Render metrics from `classification_metrics` as Markdown.

    Args:
        metrics: The dict `classification_metrics` returns.
        title: Heading of the report.

    Returns:
        Markdown text with the summary, per-label table and confusion matrix.

    Example:

    ```python
    print(format_report(metrics))
    ```
    """
    labels = metrics["labels"]
    lines = [
        f"# {title}",
        "",
        f"- examples: {metrics['examples']}",
        f"- accuracy: {metrics['accuracy']:.4f}",
        f"- macro-F1: {metrics['macro_f1']:.4f}",
        f"- weighted-F1: {metrics['weighted_f1']:.4f}",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name in labels:
        row = metrics["per_label"][name]
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} "
            f"| {row['f1']:.4f} | {row['support']} |"
        )
    lines += [
        "",
        "Confusion matrix (rows: true label, columns: predicted label):",
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for name, row in zip(labels, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


def write_report(metrics: dict, directory: str, title: str = "Evaluation") -> tuple:
    """Write `metrics.json` and `report.md` into a directory.

    Args:
        metrics: The dict `classification_metrics` returns.
        directory: Existing directory to write into.
        title: Heading of the Markdown report.

    Returns:
        The paths `(metrics_json, report_md)`.

    Example:

    ```python
    write_report(metrics, "exported/my-run")
    ```
    """
    metrics_path = os.path.join(directory, "metrics.json")
    report_path = os.path.join(directory, "report.md")
    with open(metrics_path, "w", encoding="utf-8") as file:
        json.dump(metrics, file, ensure_ascii=False, indent=2)
    with open(report_path, "w", encoding="utf-8") as file:
        file.write(format_report(metrics, title))
    return metrics_path, report_path
