"""Per-example training losses: cross-entropy, label smoothing, focal."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="fnn_keras")
class SparseTargetLoss(keras.losses.Loss):
    """Apply a loss written for one-hot targets to integer label ids.

    Keras's label smoothing and focal cross-entropy take one-hot targets;
    the training data carries class ids. This loss one-hots them and calls
    `loss`, keeping its per-example values.

    Args:
        loss: A Keras loss over one-hot targets, with `reduction=None`.
        num_labels: int. Number of classes.

    Example:

    ```python
    loss = SparseTargetLoss(
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1, reduction=None), 3
    )
    loss([2, 0], [[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]])  # shape (2,)
    ```
    """

    def __init__(self, loss, num_labels, name="sparse_target_loss", **kwargs):
        super().__init__(name=name, reduction=None, **kwargs)
        self.loss = loss
        self.num_labels = num_labels

    def call(self, y_true, y_pred):
        ids = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        targets = keras.ops.one_hot(ids, self.num_labels, dtype=y_pred.dtype)  # (batch, labels)
        return self.loss(targets, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(
            loss=keras.saving.serialize_keras_object(self.loss), num_labels=self.num_labels
        )
        return config

    @classmethod
    def from_config(cls, config):
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        config.pop("reduction", None)
        return cls(**config)


def build_loss(
    name: str, num_labels: int, label_smoothing: float = 0.0, focal_gamma: float = 2.0
) -> keras.losses.Loss:
    """Build the per-example training loss (`reduction=None`) over probabilities.

    Args:
        name: `"cross_entropy"` or `"focal"`.
        num_labels: Number of classes.
        label_smoothing: Share of each target spread evenly over the labels.
        focal_gamma: Focusing parameter of the focal loss. Its class
            balance factor `alpha` is 1: class weights do that job.

    Returns:
        A `keras.losses.Loss` taking class ids and probabilities.

    Example:

    ```python
    loss = build_loss("focal", num_labels=2, focal_gamma=2.0)
    ```
    """
    if name == "cross_entropy" and label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy(reduction=None)
    if name == "cross_entropy":
        inner = keras.losses.CategoricalCrossentropy(
            label_smoothing=label_smoothing, reduction=None
        )
    elif name == "focal":
        inner = keras.losses.CategoricalFocalCrossentropy(
            alpha=1.0, gamma=focal_gamma, label_smoothing=label_smoothing, reduction=None
        )
    else:
        raise ValueError(f"`name` must be 'cross_entropy' or 'focal'. Received: name={name!r}.")
    return SparseTargetLoss(inner, num_labels)
