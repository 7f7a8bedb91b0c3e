"""The label vocabulary: label strings to class ids, saved with the model."""

from __future__ import annotations

import collections
import json


class LabelError(ValueError):
    """Raised when labels do not match the vocabulary."""


def _counts_text(counts: collections.Counter) -> str:
    return ", ".join(f"{label!r} ({count})" for label, count in counts.most_common())


def _sort_key(label: str):
    # Integer labels sort by value ("2" before "10"), others alphabetically.
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)


class LabelVocabulary:
    """The ordered list of labels that maps each label to its class id.

    Args:
        labels: The labels, in class-id order.

    Example:

    ```python
    vocab = LabelVocabulary.from_labels(["pos", "neg", "pos"])
    vocab.labels  # ["neg", "pos"]
    vocab.encode(["pos"])  # [1]
    ```
    """

    def __init__(self, labels: list[str]):
        if len(set(labels)) != len(labels):
            raise LabelError(f"Duplicate labels in the vocabulary: {labels}")
        self.labels = list(labels)
        self._ids = {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_labels(cls, labels: list[str]) -> LabelVocabulary:
        """Build the vocabulary from training labels, sorted."""
        return cls(sorted(set(labels), key=_sort_key))

    def check(self, labels: list[str], source: str, known: str = "the training labels") -> None:
        """Raise `LabelError` listing labels outside the vocabulary, with counts.

        `known` names where the vocabulary came from, for the message.
        """
        unknown = collections.Counter(x for x in labels if x not in self._ids)
        if unknown:
            raise LabelError(
                f"{source}: label(s) not in {known}: {_counts_text(unknown)}. "
                f"Known labels: {', '.join(self.labels)}."
            )

    def encode(self, labels: list[str]) -> list[int]:
        """Map labels to class ids; every label must be known."""
        self.check(labels, "labels")
        return [self._ids[x] for x in labels]

    def save(self, path: str) -> None:
        """Write the labels as a JSON list."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.labels, file, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str) -> LabelVocabulary:
        """Read labels written by `save`."""
        with open(path, encoding="utf-8") as file:
            return cls(json.load(file))


def build_vocabulary(
    train_labels: list[str],
    dev_labels: list[str],
    declared: list[str] | None = None,
    train_source: str = "train",
    dev_source: str = "dev",
) -> LabelVocabulary:
    """Build the label vocabulary of a run and check both splits against it.

    Args:
        train_labels: Label of each training example.
        dev_labels: Label of each dev example.
        declared: The labels in class-id order, when the user lists them;
            `None` takes the training labels, sorted.
        train_source: Name of the training data in errors, usually its path.
        dev_source: Name of the dev data in errors.

    Returns:
        The `LabelVocabulary`.

    Raises:
        LabelError: Fewer than 2 labels in training, a declared label with
            no training row, or a training or dev label outside the
            vocabulary. The message lists the labels with their row counts.

    Example:

    ```python
    vocab = build_vocabulary(["pos", "neg"], ["neg"], declared=["neg", "pos"])
    ```
    """
    counts = collections.Counter(train_labels)
    if declared is None:
        vocabulary = LabelVocabulary.from_labels(train_labels)
    else:
        vocabulary = LabelVocabulary(list(declared))
        vocabulary.check(train_labels, train_source, known="--labels")
        missing = [label for label in vocabulary.labels if label not in counts]
        if missing:
            raise LabelError(
                f"{train_source}: declared label(s) {', '.join(map(repr, missing))} have no "
                f"training rows. Training label counts: {_counts_text(counts)}. Add rows for "
                "them or remove them from --labels."
            )
    if len(vocabulary) < 2:
        raise LabelError(
            f"{train_source}: training needs at least 2 distinct labels. "
            f"Found: {_counts_text(counts)}."
        )
    try:
        vocabulary.check(dev_labels, dev_source)
    except LabelError as error:
        raise LabelError(f"{error} Training label counts: {_counts_text(counts)}.") from None
    return vocabulary


def class_weights(setting, vocabulary: LabelVocabulary, train_labels: list[str]) -> list[float]:
    """Return the loss weight of each class id.

    Args:
        setting: `"none"` (all 1), `"balanced"` (`rows / (classes * rows of
            the class)`), or a dict of label to weight that names every label.
        vocabulary: The run's labels.
        train_labels: Label of each training example.

    Returns:
        One float per class id.

    Raises:
        LabelError: The dict leaves out a label or names an unknown one.

    Example:

    ```python
    vocab = LabelVocabulary(["neg", "pos"])
    class_weights("balanced", vocab, ["neg", "neg", "neg", "pos"])  # [0.667, 2.0]
    ```
    """
    if setting == "none":
        return [1.0] * len(vocabulary)
    if setting == "balanced":
        counts = collections.Counter(train_labels)
        total = len(train_labels)
        return [total / (len(vocabulary) * counts[label]) for label in vocabulary.labels]
    unknown = sorted(set(setting) - set(vocabulary.labels))
    missing = [label for label in vocabulary.labels if label not in setting]
    if unknown or missing:
        raise LabelError(
            f"--class-weight must give a weight to each label ({', '.join(vocabulary.labels)}); "
            f"unknown: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}."
        )
    return [float(setting[label]) for label in vocabulary.labels]
