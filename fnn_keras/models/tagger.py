"""The token tagger: BERT backbone, feedback layer over every position, softmax per token."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from fnn_keras.layers import FeedbackLayer
from fnn_keras.models.classifier import INPUT_NAMES, feedback_arguments
from fnn_keras.models.fine_tuning import apply_fine_tuning


def build_tagger(
    backbone: keras.Model,
    num_tags: int,
    feedback_units: int = 128,
    feedback_steps: int = 2,
    bidirectional: bool = True,
    feedback_dropout: float = 0.1,
    dropout: float = 0.1,
    sequence_length: int | None = None,
    unroll: bool = False,
    seed: int | None = None,
    fine_tune: str = "full",
    lora_rank: int = 8,
) -> keras.Model:
    """Build `backbone ▶ FeedbackLayer (all steps) ▶ dropout ▶ dense softmax per token`.

    The model takes `token_ids`, `segment_ids` and `padding_mask`, each
    `(batch, time)` int32, and returns tag probabilities of shape
    `(batch, time, num_tags)` in float32. The feedback layer returns its
    output at every position, in both directions with `bidirectional`, and
    padded positions never change its state.

    Args:
        backbone: A keras-hub `BertBackbone`.
        num_tags: Number of tags, 2 or more.
        feedback_units: Width of the feedback state per direction.
        feedback_steps: Feedback iterations per token.
        bidirectional: Run the feedback layer both ways and concatenate.
        feedback_dropout: Input dropout rate of the feedback cell.
        dropout: Dropout rate before the dense head.
        sequence_length: Fixed time dimension of the inputs, or `None` for
            any length.
        unroll: Unroll the feedback loop wherever the length is static at
            trace time, for TFLite.
        seed: Seed for dropout.
        fine_tune: Which backbone weights train: `"full"`, `"frozen"` or
            `"lora"`; see `apply_fine_tuning`.
        lora_rank: Rank of the LoRA updates when `fine_tune="lora"`.

    Returns:
        An uncompiled `keras.Model`.

    Example:

    ```python
    bundle = load_backbone("tiny")
    model = build_tagger(bundle.backbone, num_tags=5)
    # model(inputs) has shape (batch, time, 5)
    ```
    """
    if num_tags < 2:
        raise ValueError(f"A tagger needs at least 2 tags. Received: num_tags={num_tags}.")

    # The pooler is not used; freezing it keeps the optimizer from warning
    # on every step that it has no gradient.
    backbone.get_layer("pooled_dense").trainable = False
    apply_fine_tuning(backbone, fine_tune, lora_rank)

    # === Layers ===
    feedback = FeedbackLayer(
        feedback_units,
        feedback_steps=feedback_steps,
        dropout=feedback_dropout,
        unroll=unroll,
        seed=seed,
        return_sequences=True,
        name="feedback",
    )
    if bidirectional:
        feedback = keras.layers.Bidirectional(feedback, name="bidirectional_feedback")
    head_dropout = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")
    head = keras.layers.Dense(num_tags, activation="softmax", dtype="float32", name="probabilities")

    # === Functional graph ===
    inputs = {
        name: keras.Input(shape=(sequence_length,), dtype="int32", name=name)
        for name in INPUT_NAMES
    }
    sequence_output = backbone(inputs)["sequence_output"]  # (batch, time, hidden)
    features = feedback(sequence_output, mask=inputs["padding_mask"])  # (batch, time, units)
    probabilities = head(head_dropout(features))  # (batch, time, num_tags)
    return keras.Model(inputs, probabilities, name="feedback_tagger")


def tagger_from_config(model_config, backbone: keras.Model, num_tags: int, seed=None, **kwargs):
    """Build the tagger a `ModelConfig` describes, on `backbone`.

    `pooling` is not used: every position goes to the head.

    Args:
        model_config: The `model` section of a run's `Config`.
        backbone: A keras-hub `BertBackbone`.
        num_tags: Number of tags.
        seed: Seed for dropout.
        **kwargs: Other arguments of `build_tagger`, such as
            `sequence_length` and `unroll` for TFLite.

    Returns:
        The output of `build_tagger`.

    Example:

    ```python
    model = tagger_from_config(Config().model, bundle.backbone, 17, seed=0)
    ```
    """
    return build_tagger(
        backbone, num_tags=num_tags, seed=seed, **feedback_arguments(model_config), **kwargs
    )


def tag_probabilities(model: keras.Model, features: dict, batch_size: int = 64) -> np.ndarray:
    """Run a tagger over padded inputs in batches, each cut to its longest row.

    Args:
        model: A model from `build_tagger`.
        features: `token_ids`, `segment_ids` and `padding_mask` arrays, each
            `(rows, sequence_length)`.
        batch_size: Rows per forward pass.

    Returns:
        float32 `(rows, sequence_length, num_tags)` probabilities; positions
        past a batch's longest row are 0.

    Example:

    ```python
    probabilities = tag_probabilities(model, aligned.features())
    tag_ids = probabilities.argmax(-1)
    ```
    """
    rows, length = features["token_ids"].shape
    num_tags = model.output_shape[-1]
    probabilities = np.zeros((rows, length, num_tags), np.float32)
    # One trace for every batch size and length.
    signature = {name: tf.TensorSpec((None, None), tf.int32, name=name) for name in INPUT_NAMES}
    forward = tf.function(lambda inputs: model(inputs, training=False), input_signature=[signature])
    for first in range(0, rows, batch_size):
        last = min(first + batch_size, rows)
        longest = max(int(features["padding_mask"][first:last].sum(axis=1).max()), 1)
        batch = {
            name: tf.constant(features[name][first:last, :longest], tf.int32)
            for name in INPUT_NAMES
        }
        probabilities[first:last, :longest] = keras.ops.convert_to_numpy(forward(batch))
    return probabilities
