"""Multi-label targets: label sets, multi-hot rows and per-label thresholds."""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from fnn_keras.data.labels import LabelError, LabelVocabulary
from fnn_keras.data.thresholds import MAX_THRESHOLD, ThresholdError, cut_threshold

logger = logging.getLogger(__name__)

LABEL_THRESHOLDS_FILE = "label_thresholds.json"
DEFAULT_THRESHOLD = 0.5


def split_label_sets(
    fields: list[str], delimiter: str, source: str = "data", lines: list[int] | None = None
) -> list[list[str]]:
    """Split each label field into its labels.

    Labels are stripped of surrounding white space. A label written twice in
    one field counts once, and empty pieces (`a,,b`) are left out; both are
    counted in a warning.

    Args:
        fields: The label field of each example, such as `"sports,finance"`.
        delimiter: The separator between labels.
        source: Name of the data in messages, usually its path.
        lines: The file line of each field, for messages; `None` numbers
            the examples instead.

    Returns:
        The labels of each example, in the order written.

    Raises:
        LabelError: A field has no label at all.

    Example:

    ```python
    split_label_sets(["a,b", "b"], ",")  # [["a", "b"], ["b"]]
    ```
    """
    sets, empty_pieces, repeats = [], 0, 0
    for index, field in enumerate(fields):
        pieces = [piece.strip() for piece in field.split(delimiter)]
        labels = [piece for piece in pieces if piece]
        empty_pieces += len(pieces) - len(labels)
        unique = list(dict.fromkeys(labels))
        repeats += len(labels) - len(unique)
        if not unique:
            where = f"{source}:{lines[index]}:" if lines else f"{source}: example {index + 1}:"
            raise LabelError(
                f"{where} label field {field!r} has no label between the {delimiter!r} "
                "separators; give the text at least one label."
            )
        sets.append(unique)
    if empty_pieces or repeats:
        logger.warning(
            "%s: left out %d empty label(s) between separators and %d label(s) repeated "
            "within one example.",
            source,
            empty_pieces,
            repeats,
        )
    return sets


def multi_hot(label_sets: list[list[str]], vocabulary: LabelVocabulary) -> np.ndarray:
    """Return `(n, num_labels)` float32 targets: 1 where the example has the label.

    Raises:
        LabelError: A label is not in the vocabulary.

    Example:

    ```python
    multi_hot([["b"], ["a", "b"]], LabelVocabulary(["a", "b"]))  # [[0, 1], [1, 1]]
    ```
    """
    targets = np.zeros((len(label_sets), len(vocabulary)), np.float32)
    for row, labels in enumerate(label_sets):
        targets[row, vocabulary.encode(labels)] = 1.0
    return targets


def predicted_label_mask(probabilities, thresholds) -> np.ndarray:
    """Return the `(n, num_labels)` bool mask of labels at or above their thresholds.

    Example:

    ```python
    predicted_label_mask(np.array([[0.7, 0.2]]), [0.5, 0.1])  # [[True, True]]
    ```
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    return probabilities >= np.asarray(thresholds, dtype=np.float32)


def _f1(hits, false_positives, false_negatives):
    denominator = 2 * hits + false_positives + false_negatives
    return np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)


def tune_label_thresholds(probabilities, targets) -> list[dict]:
    """Choose each label's threshold to maximise that label's F1 on labelled data.

    For each label, every cut between two distinct probabilities of that
    label is scored, and so are the cuts that predict the label for no
    example and for every example. The threshold is a float32 midpoint of
    the best cut, so float32 runtimes draw the same line. Among equally good
    cuts the one nearest 0.5 wins. A label without positive examples keeps
    0.5, because no cut can score on it.

    Args:
        probabilities: `(n, num_labels)` sigmoid outputs.
        targets: `(n, num_labels)` 0/1 targets.

    Returns:
        One dict per label: `threshold`, `f1` (with it) and `default_f1`
        (with 0.5).

    Raises:
        ThresholdError: The shapes differ or there are no examples.

    Example:

    ```python
    tune_label_thresholds(np.array([[0.3], [0.2]]), np.array([[1], [0]]))
    # [{"threshold": 0.25, "f1": 1.0, "default_f1": 0.0}]
    ```
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if probabilities.shape != targets.shape or probabilities.ndim != 2:
        raise ThresholdError(
            "Threshold tuning needs probabilities and targets of the same (n, labels) shape. "
            f"Received: {probabilities.shape} and {targets.shape}."
        )
    if len(targets) == 0:
        raise ThresholdError("Threshold tuning needs at least one example.")
    results = []
    for column in range(targets.shape[1]):
        scores, truth = probabilities[:, column], targets[:, column]
        positives = float(truth.sum())
        default = predicted_label_mask(scores, DEFAULT_THRESHOLD)
        default_f1 = float(
            _f1(
                np.array([float(np.sum(default & (truth == 1)))]),
                np.array([float(np.sum(default & (truth == 0)))]),
                np.array([float(np.sum(~default & (truth == 1)))]),
            )[0]
        )
        if positives == 0:
            results.append(
                {"threshold": DEFAULT_THRESHOLD, "f1": default_f1, "default_f1": default_f1}
            )
            continue
        order = np.argsort(-scores, kind="stable")
        sorted_scores, sorted_truth = scores[order], truth[order]
        # Cut k predicts the label for the k highest scores.
        distinct = np.nonzero(sorted_scores[:-1] > sorted_scores[1:])[0] + 1
        cuts = np.concatenate([[0], distinct, [len(sorted_scores)]])
        hits = np.concatenate([[0.0], np.cumsum(sorted_truth)])[cuts]
        f1 = _f1(hits, cuts - hits, positives - hits)
        thresholds = np.array([cut_threshold(sorted_scores, cut) for cut in cuts])
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        choice = best[np.argmin(np.abs(thresholds[best] - DEFAULT_THRESHOLD))]
        results.append(
            {
                "threshold": float(thresholds[choice]),
                "f1": float(f1[choice]),
                "default_f1": default_f1,
            }
        )
    return results


def save_label_thresholds(
    directory: str, labels: list[str], thresholds: list[float], tuned_on: str | None = None
) -> str:
    """Write `label_thresholds.json`: each label's decision threshold.

    Args:
        directory: Existing run or export directory.
        labels: Label names in output order.
        thresholds: One threshold per label.
        tuned_on: The file the thresholds were tuned on, or `None` for the
            default 0.5.

    Returns:
        The file's path.

    Example:

    ```python
    save_label_thresholds("exported/run", ["a", "b"], [0.5, 0.5])
    ```
    """
    path = os.path.join(directory, LABEL_THRESHOLDS_FILE)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(
            {
                "tuned_on": tuned_on,
                "metric": "f1 per label" if tuned_on else None,
                "thresholds": dict(zip(labels, map(float, thresholds), strict=True)),
            },
            file,
            ensure_ascii=False,
            indent=1,
        )
    return path


def load_label_thresholds(directory: str, labels: list[str]) -> list[float] | None:
    """Read the per-label thresholds saved in `directory`, or `None` when there are none.

    Raises:
        ThresholdError: The file is unreadable, lists other labels, or has
            a value outside [0, 1].

    Example:

    ```python
    thresholds = load_label_thresholds("exported/run", ["a", "b"])
    ```
    """
    path = os.path.join(directory, LABEL_THRESHOLDS_FILE)
    if not os.path.exists(path):
        return None
    fix = "restore it from the run directory or retrain"
    try:
        with open(path, encoding="utf-8") as file:
            values = json.load(file)["thresholds"]
        thresholds = [float(values[label]) for label in labels]
    except KeyError as error:
        raise ThresholdError(f"{path}: no threshold for {error}; {fix}.") from None
    except (OSError, ValueError, TypeError) as error:
        raise ThresholdError(f"{path}: unreadable thresholds file ({error}); {fix}.") from None
    extra = sorted(set(values) - set(labels))
    if extra:
        raise ThresholdError(
            f"{path} names label(s) {', '.join(map(repr, extra))} that the model does not "
            f"have ({', '.join(labels)}); {fix}."
        )
    # A tuned threshold can lie a float32 step above 1 (no text reaches it).
    bad = [value for value in thresholds if not 0.0 <= value <= MAX_THRESHOLD]
    if bad:
        raise ThresholdError(f"{path}: threshold {bad[0]} is not between 0 and 1; {fix}.")
    return thresholds
