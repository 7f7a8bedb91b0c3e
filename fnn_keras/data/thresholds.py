"""The decision threshold of a binary classifier: tuning, saving and applying it."""

from __future__ import annotations

import json
import os

import numpy as np

THRESHOLDS_FILE = "thresholds.json"
MAX_THRESHOLD = float(np.nextafter(np.float32(1.0), np.float32(2.0)))


class ThresholdError(ValueError):
    """Raised when thresholds cannot be tuned, read or applied."""


def predicted_ids(probabilities, threshold: float | None = None) -> np.ndarray:
    """Turn class probabilities into class ids.

    Without a threshold the most probable class wins. With one, the model
    must be binary: class 1 is predicted when its probability is at least
    `threshold`, class 0 otherwise.

    Args:
        probabilities: `(n, num_labels)` class probabilities.
        threshold: The probability of class 1 at and above which class 1 is
            predicted, or `None` for the most probable class.

    Returns:
        `(n,)` int64 class ids.

    Example:

    ```python
    predicted_ids(np.array([[0.6, 0.4]]), threshold=0.3)  # array([1])
    ```
    """
    probabilities = np.asarray(probabilities)
    if threshold is None:
        return np.argmax(probabilities, axis=-1).astype(np.int64)
    if probabilities.shape[-1] != 2:
        raise ThresholdError(
            f"A decision threshold needs a binary model. Received probabilities for "
            f"{probabilities.shape[-1]} labels."
        )
    return (probabilities[:, 1] >= threshold).astype(np.int64)


def _binary_macro_f1(true_positives, false_positives, false_negatives, true_negatives):
    def f1(hits, misses):
        denominator = 2 * hits + misses
        return np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)

    wrong = false_positives + false_negatives
    return (f1(true_positives, wrong) + f1(true_negatives, wrong)) / 2


def cut_threshold(sorted_scores: np.ndarray, cut: int) -> float:
    """Return a float32 threshold that puts exactly the `cut` highest scores at or above it.

    It is the midpoint between the scores on either side of the cut, as a
    float32 value, so a runtime comparing float32 probabilities draws the
    same line. Where no float32 lies strictly between them, the lower edge
    of the kept scores is used.
    """
    scores = sorted_scores.astype(np.float32)
    if cut == 0:
        return float(np.nextafter(scores[0], np.float32(np.inf)))
    if cut == len(scores):
        return float(min(scores[-1], np.float32(0.0)))
    above, below = scores[cut - 1], scores[cut]
    middle = np.float32((np.float64(above) + np.float64(below)) / 2)
    return float(middle if below < middle <= above else above)


def tune_binary_threshold(probabilities, label_ids) -> dict:
    """Find the threshold on class 1's probability that maximises macro-F1.

    Every cut between two distinct probabilities of class 1 is scored; the
    threshold is the midpoint of the best cut. Among equally good cuts the
    one nearest 0.5 wins, so a flat optimum does not drift to an extreme.

    Args:
        probabilities: `(n, 2)` class probabilities.
        label_ids: `(n,)` true class ids, 0 or 1.

    Returns:
        `{"threshold", "macro_f1", "argmax_macro_f1"}`: the threshold and the
        macro-F1 with it and with the most probable class.

    Raises:
        ThresholdError: The model is not binary, or there are no examples.

    Example:

    ```python
    tune_binary_threshold(np.array([[0.7, 0.3], [0.6, 0.4]]), np.array([0, 1]))
    ```
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    label_ids = np.asarray(label_ids, dtype=np.int64)
    if probabilities.ndim != 2 or probabilities.shape[1] != 2:
        raise ThresholdError(
            "Threshold tuning needs a binary model. Received probabilities of shape "
            f"{probabilities.shape}."
        )
    if len(label_ids) == 0:
        raise ThresholdError("Threshold tuning needs at least one dev example.")
    if len(set(label_ids.tolist())) < 2:
        raise ThresholdError(
            "Threshold tuning needs dev examples of both labels; the dev data has only "
            f"class {label_ids[0]}."
        )

    scores = probabilities[:, 1]
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], label_ids[order]
    positives = float(sorted_labels.sum())
    negatives = float(len(sorted_labels) - positives)

    # Cut k predicts class 1 for the k highest scores. Only cuts between two
    # distinct scores can be expressed as a threshold, plus "all" and "none".
    distinct = np.nonzero(sorted_scores[:-1] > sorted_scores[1:])[0] + 1
    cuts = np.concatenate([[0], distinct, [len(sorted_scores)]])
    hits = np.concatenate([[0.0], np.cumsum(sorted_labels, dtype=np.float64)])[cuts]
    false_positives = cuts - hits
    false_negatives = positives - hits
    true_negatives = negatives - false_positives
    macro_f1 = _binary_macro_f1(hits, false_positives, false_negatives, true_negatives)

    thresholds = np.array([cut_threshold(sorted_scores, cut) for cut in cuts])
    best = np.flatnonzero(macro_f1 >= macro_f1.max() - 1e-12)
    choice = best[np.argmin(np.abs(thresholds[best] - 0.5))]

    argmax_ids = predicted_ids(probabilities)
    argmax_hits = float(np.sum((argmax_ids == 1) & (label_ids == 1)))
    argmax_fp = float(np.sum((argmax_ids == 1) & (label_ids == 0)))
    argmax_f1 = _binary_macro_f1(
        np.array([argmax_hits]),
        np.array([argmax_fp]),
        np.array([positives - argmax_hits]),
        np.array([negatives - argmax_fp]),
    )[0]
    return {
        "threshold": float(thresholds[choice]),
        "macro_f1": float(macro_f1[choice]),
        "argmax_macro_f1": float(argmax_f1),
    }


def save_thresholds(directory: str, label: str, tuned: dict, tuned_on: str) -> str:
    """Write `thresholds.json` into a run or export directory.

    Args:
        directory: Existing directory.
        label: Name of class 1, the label the threshold applies to.
        tuned: The dict `tune_binary_threshold` returns.
        tuned_on: The file the threshold was tuned on.

    Returns:
        The file's path.

    Example:

    ```python
    save_thresholds("exported/run", "pos", tune_binary_threshold(p, y), "dev.tsv")
    ```
    """
    path = os.path.join(directory, THRESHOLDS_FILE)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(
            {"label": label, "tuned_on": tuned_on, "metric": "macro_f1", **tuned},
            file,
            ensure_ascii=False,
            indent=1,
        )
    return path


def load_threshold(directory: str, labels: list[str]) -> float | None:
    """Read the threshold saved in `directory`, or `None` when there is none.

    Args:
        directory: A run directory, or a TFLite or ONNX export directory.
        labels: The model's labels in class-id order, to check the file
            against.

    Raises:
        ThresholdError: The file is unreadable, or names another label than
            class 1 of a binary model.

    Example:

    ```python
    threshold = load_threshold("exported/run", ["neg", "pos"])
    ```
    """
    path = os.path.join(directory, THRESHOLDS_FILE)
    if not os.path.exists(path):
        return None
    fix = "delete it to predict the most probable label, or retrain with --tune-thresholds"
    try:
        with open(path, encoding="utf-8") as file:
            values = json.load(file)
        label, threshold = values["label"], float(values["threshold"])
    except KeyError as error:
        raise ThresholdError(f"{path}: missing key {error}; {fix}.") from None
    except (OSError, ValueError, TypeError) as error:
        raise ThresholdError(f"{path}: unreadable threshold file ({error}); {fix}.") from None
    # A tuned threshold can lie a float32 step above 1 (no text reaches it).
    if not 0.0 <= threshold <= MAX_THRESHOLD:
        raise ThresholdError(
            f"{path}: threshold {threshold} is not a probability between 0 and 1; {fix}."
        )
    if len(labels) != 2 or label != labels[1]:
        raise ThresholdError(
            f"{path} sets a threshold for label {label!r}, but the model's labels are "
            f"{labels}; a threshold applies to the second label of a binary model."
        )
    return threshold
