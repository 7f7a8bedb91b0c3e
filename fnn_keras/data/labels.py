"""The label vocabulary: label strings to class ids, saved with the model."""

from __future__ import annotations

import collections
import json


class LabelError(ValueError):
    """Raised when labels do not match the vocabulary."""


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

    def check(self, labels: list[str], source: str) -> None:
        """Raise `LabelError` listing labels outside the vocabulary."""
        unknown = collections.Counter(x for x in labels if x not in self._ids)
        if unknown:
            listed = ", ".join(f"{k!r} ({v})" for k, v in unknown.most_common())
            raise LabelError(
                f"{source}: label(s) not in the training labels: {listed}. "
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
