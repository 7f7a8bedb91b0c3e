"""Classification metrics: accuracy, per-label P/R/F1, confusion matrix."""

from __future__ import annotations

import numpy as np


def classification_metrics(
    label_ids: np.ndarray, predicted_ids: np.ndarray, labels: list[str]
) -> dict:
    """Compute accuracy, macro-F1, per-label scores and the confusion matrix.

    A label with no predictions gets precision 0, and one with no examples
    gets recall 0, so neither raises a division error.

    Args:
        label_ids: True class ids, shape `(n,)`.
        predicted_ids: Predicted class ids, shape `(n,)`.
        labels: Label names in class-id order.

    Returns:
        A JSON-ready dict with `accuracy`, `macro_f1`, `weighted_f1`,
        `examples`, `per_label` (name to precision, recall, f1, support) and
        `confusion_matrix` (rows are true labels, columns predictions).

    Example:

    ```python
    classification_metrics(np.array([0, 1]), np.array([0, 0]), ["neg", "pos"])
    ```
    """
    label_ids = np.asarray(label_ids, dtype=np.int64)
    predicted_ids = np.asarray(predicted_ids, dtype=np.int64)
    num_labels = len(labels)
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (label_ids, predicted_ids), 1)

    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(true_positives, predicted, out=np.zeros(num_labels), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros(num_labels), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall,
        denominator,
        out=np.zeros(num_labels),
        where=denominator > 0,
    )

    total = max(int(support.sum()), 1)
    return {
        "examples": int(support.sum()),
        "accuracy": float(true_positives.sum() / total),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / total),
        "per_label": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": confusion.tolist(),
    }
