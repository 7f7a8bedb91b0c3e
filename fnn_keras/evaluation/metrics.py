"""Classification metrics: accuracy, per-label P/R/F1, confusion matrix."""

from __future__ import annotations

import numpy as np

from fnn_keras.data.thresholds import predicted_ids


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


def example_losses(probabilities, label_ids) -> np.ndarray:
    """Return each example's cross-entropy, `-log p(true label)`, as float64.

    Probabilities are clipped at 1e-7 as Keras's cross-entropy does, so a
    confident mistake has a large but finite loss.

    Example:

    ```python
    example_losses(np.array([[0.9, 0.1]]), np.array([1]))  # array([2.3026])
    ```
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    label_ids = np.asarray(label_ids, dtype=np.int64)
    true_probability = probabilities[np.arange(len(label_ids)), label_ids]
    return -np.log(np.clip(true_probability, 1e-7, 1.0))


def most_wrong(probabilities, label_ids, texts: list, labels: list[str], count: int = 20) -> list:
    """List the misclassified examples with the highest loss, worst first.

    Args:
        probabilities: `(n, num_labels)` class probabilities.
        label_ids: `(n,)` true class ids.
        texts: The `n` texts, or `(text, text_pair)` tuples.
        labels: Label names in class-id order.
        count: At most this many examples.

    Returns:
        Dicts with `index` (row in the data), `text`, `true`, `predicted`,
        `probability` (of the predicted label), `true_probability` and `loss`.

    Example:

    ```python
    most_wrong(np.array([[0.9, 0.1]]), np.array([1]), ["dull"], ["neg", "pos"])
    ```
    """
    probabilities = np.asarray(probabilities)
    label_ids = np.asarray(label_ids, dtype=np.int64)
    predicted = np.argmax(probabilities, axis=-1)
    losses = example_losses(probabilities, label_ids)
    wrong = np.flatnonzero(predicted != label_ids)
    worst = wrong[np.argsort(-losses[wrong], kind="stable")][:count]
    return [
        {
            "index": int(i),
            "text": texts[i],
            "true": labels[label_ids[i]],
            "predicted": labels[predicted[i]],
            "probability": float(probabilities[i, predicted[i]]),
            "true_probability": float(probabilities[i, label_ids[i]]),
            "loss": float(losses[i]),
        }
        for i in worst
    ]


def evaluation_metrics(
    probabilities, label_ids, labels: list[str], split: str, threshold: float | None = None
) -> dict:
    """Compute the report of a labelled split from the model's probabilities.

    Training's final dev evaluation and `python -m fnn_keras.evaluate` both
    call this, so the same probabilities give the same report.

    Args:
        probabilities: `(n, num_labels)` class probabilities.
        label_ids: `(n,)` true class ids.
        labels: Label names in class-id order.
        split: The data file, recorded as `split`.
        threshold: The binary decision threshold of the run, or `None` for
            the most probable label.

    Returns:
        `classification_metrics` plus `loss` (mean cross-entropy), `split`
        and `threshold`.

    Example:

    ```python
    evaluation_metrics(np.array([[0.8, 0.2]]), np.array([0]), ["neg", "pos"], "dev.tsv")
    ```
    """
    label_ids = np.asarray(label_ids, dtype=np.int64)
    predicted = predicted_ids(probabilities, threshold)
    metrics = classification_metrics(label_ids, predicted, labels)
    metrics["loss"] = float(example_losses(probabilities, label_ids).mean())
    metrics["split"] = split
    metrics["threshold"] = threshold
    return metrics
