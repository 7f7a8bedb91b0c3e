"""Adversarial training with the fast gradient method (FGM) on word embeddings."""

from __future__ import annotations

import keras
import tensorflow as tf


class EmbeddingPerturbation:
    """Add a tensor to the output of an embedding layer while one is set.

    FGM needs the gradient of the loss with respect to the word-embedding
    output, and a second forward pass with that output moved. keras-hub's
    `BertBackbone` is a functional model whose token embedding feeds the
    position and segment sums directly, so this object wraps the layer's
    `call` instead. While `delta` is `None` the layer is unchanged; while
    `delta` is a `(batch, time, hidden)` tensor, it is added to the layer's
    output. Only the layer object in this process is changed;
    nothing of it is saved.

    Args:
        layer: The token embedding layer, such as `backbone.token_embedding`.

    Example:

    ```python
    perturbation = EmbeddingPerturbation(backbone.token_embedding)
    with tf.GradientTape() as tape:
        delta = perturbation.zeros(inputs["token_ids"])
        tape.watch(delta)
        perturbation.delta = delta
        loss = loss_fn(labels, classifier(inputs))
    perturbation.delta = None
    embedding_gradient = tape.gradient(loss, delta)
    ```
    """

    def __init__(self, layer: keras.layers.Layer):
        self.layer = layer
        self.hidden_dim = layer.output_dim
        self.delta = None
        original = layer.call

        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            if self.delta is None or kwargs.get("reverse", False):
                return outputs
            return outputs + tf.cast(self.delta, outputs.dtype)

        layer.call = call

    def zeros(self, token_ids) -> tf.Tensor:
        """Return float32 zeros shaped like the embedding output for `token_ids`."""
        shape = tf.concat([tf.shape(token_ids), [self.hidden_dim]], axis=0)
        return tf.zeros(shape, tf.float32)  # (batch, time, hidden)


def fgm_perturbation(gradient, epsilon: float) -> tf.Tensor:
    """Scale each example's embedding gradient to L2 norm `epsilon`.

    This is the fast gradient method's perturbation: the step of length
    `epsilon` along which the loss rises fastest, to first order. Each
    example is normalised on its own, over all its positions and hidden
    units, so the perturbation does not depend on the batch or on how the
    batch is split over replicas. An example whose gradient is zero gets
    no perturbation. Padded positions get none either: their gradient is
    zero, since attention never reads them.

    Args:
        gradient: `(batch, time, hidden)` gradient of the loss with respect
            to the embedding output. A constant factor, such as float16
            loss scaling, does not change the result.
        epsilon: float. The norm of each example's perturbation.

    Returns:
        A float32 tensor shaped like `gradient`, with no gradient of its own.

    Example:

    ```python
    r = fgm_perturbation(tf.ones([2, 3, 4]), epsilon=1.0)
    tf.norm(r[0])  # 1.0
    ```
    """
    gradient = tf.stop_gradient(tf.cast(gradient, tf.float32))
    norms = tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=[1, 2], keepdims=True))  # (batch, 1, 1)
    return epsilon * tf.math.divide_no_nan(gradient, norms)
