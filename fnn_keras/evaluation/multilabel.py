"""Multi-label metrics: per-label and micro/macro precision, recall and F1."""

from __future__ import annotations

import json
import os

import numpy as np

from fnn_keras.data.multilabel import predicted_label_mask
from fnn_keras.evaluation.report import markdown_cell


def _ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def binary_cross_entropy(probabilities, targets) -> np.ndarray:
    """Return each example's binary cross-entropy, the mean over its labels, as float64.

    Probabilities are clipped to [1e-7, 1 - 1e-7] as Keras's loss does.

    Example:

    ```python
    binary_cross_entropy(np.array([[0.9, 0.2]]), np.array([[1, 0]]))  # [0.164]
    ```
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(targets, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1)


def multilabel_metrics(
    probabilities, targets, labels: list[str], thresholds, split: str | None = None
) -> dict:
    """Score multi-label predictions against 0/1 targets.

    A label is predicted where its probability is at least its threshold.
    Micro scores pool the true positives, false positives and false
    negatives of every label; macro scores average the per-label scores. A
    label never predicted gets precision 0, and one never true gets recall
    0.

    Args:
        probabilities: `(n, num_labels)` sigmoid outputs.
        targets: `(n, num_labels)` 0/1 targets.
        labels: Label names in output order.
        thresholds: One decision threshold per label.
        split: The data file, recorded as `split`.

    Returns:
        A JSON-ready dict: `task` (`"multilabel"`), `examples`,
        `micro_precision`, `micro_recall`, `micro_f1`, `macro_precision`,
        `macro_recall`, `macro_f1`, `accuracy` (the share of examples whose
        predicted label set is exactly right), `hamming_loss` (the share of
        wrong label decisions), `loss` (mean binary cross-entropy),
        `per_label` (name to precision, recall, f1, support, predicted,
        threshold), `labels`, `thresholds` and `split`.

    Example:

    ```python
    multilabel_metrics(np.array([[0.9, 0.6]]), np.array([[1, 0]]), ["a", "b"], [0.5, 0.5])
    ```
    """
    targets = np.asarray(targets).astype(bool)
    predicted = predicted_label_mask(probabilities, thresholds)
    hits = np.sum(predicted & targets, axis=0).astype(np.float64)
    predicted_counts = predicted.sum(axis=0).astype(np.float64)
    support = targets.sum(axis=0).astype(np.float64)
    precision = _ratio(hits, predicted_counts)
    recall = _ratio(hits, support)
    f1 = _ratio(2 * hits, predicted_counts + support)
    micro_precision = float(_ratio(hits.sum(), predicted_counts.sum()))
    micro_recall = float(_ratio(hits.sum(), support.sum()))
    micro_f1 = float(_ratio(2 * hits.sum(), predicted_counts.sum() + support.sum()))
    examples = len(targets)
    return {
        "task": "multilabel",
        "examples": int(examples),
        "micro_precision": micro_precision,
        "micro_recall": micro_recall,
        "micro_f1": micro_f1,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "accuracy": float(np.all(predicted == targets, axis=1).mean()) if examples else 0.0,
        "hamming_loss": float(np.mean(predicted != targets)) if examples else 0.0,
        "loss": float(binary_cross_entropy(probabilities, targets).mean()) if examples else 0.0,
        "per_label": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(predicted_counts[i]),
                "threshold": float(thresholds[i]),
            }
            for i, name in enumerate(labels)
        },
        "labels": list(labels),
        "thresholds": [float(value) for value in thresholds],
        "split": split,
    }


def format_multilabel_report(metrics: dict, title: str = "Evaluation") -> str:
    """Render `multilabel_metrics` as Markdown: the summary and the per-label table.

    Example:

    ```python
    print(format_multilabel_report(metrics, "Dev evaluation"))
    ```
    """
    lines = [f"# {title}", ""]
    if metrics.get("split"):
        lines.append(f"- data: {metrics['split']}")
    lines += [
        f"- examples: {metrics['examples']}",
        f"- micro-F1: {metrics['micro_f1']:.4f} (precision {metrics['micro_precision']:.4f}, "
        f"recall {metrics['micro_recall']:.4f})",
        f"- macro-F1: {metrics['macro_f1']:.4f}",
        f"- exact label sets: {metrics['accuracy']:.4f}",
        f"- Hamming loss: {metrics['hamming_loss']:.4f}",
        f"- loss: {metrics['loss']:.4f}",
        "",
        "| label | threshold | precision | recall | F1 | support | predicted |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_label"].items():
        lines.append(
            f"| {markdown_cell(name)} | {row['threshold']:.4f} | {row['precision']:.4f} | "
            f"{row['recall']:.4f} | {row['f1']:.4f} | {row['support']} | {row['predicted']} |"
        )
    return "\n".join(lines) + "\n"


def write_multilabel_report(metrics: dict, directory: str, title: str = "Evaluation") -> tuple:
    """Write `metrics.json` and `report.md` for `multilabel_metrics` into a directory.

    Returns:
        The paths `(metrics_json, report_md)`.

    Example:

    ```python
    write_multilabel_report(metrics, "exported/my-run")
    ```
    """
    metrics_path = os.path.join(directory, "metrics.json")
    report_path = os.path.join(directory, "report.md")
    with open(metrics_path, "w", encoding="utf-8") as file:
        json.dump(metrics, file, ensure_ascii=False, indent=2)
    with open(report_path, "w", encoding="utf-8") as file:
        file.write(format_multilabel_report(metrics, title))
    return metrics_path, report_path
