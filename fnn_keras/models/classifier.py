"""The text classifier: BERT backbone, feedback layer and softmax head."""

from __future__ import annotations

import keras

from fnn_keras.layers import FeedbackLayer
from fnn_keras.models.fine_tuning import apply_fine_tuning

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")


def build_classifier(
    backbone: keras.Model,
    num_labels: int,
    feedback_units: int = 128,
    feedback_steps: int = 2,
    bidirectional: bool = True,
    feedback_dropout: float = 0.1,
    dropout: float = 0.1,
    sequence_length: int | None = None,
    unroll: bool = False,
    seed: int | None = None,
    pooling: str = "mean",
    fine_tune: str = "full",
    lora_rank: int = 8,
    multilabel: bool = False,
) -> keras.Model:
    """Build `backbone ▶ FeedbackLayer ▶ dropout ▶ dense softmax` as one model.

    The model takes the dictionary a keras-hub BERT preprocessor produces,
    `token_ids`, `segment_ids` and `padding_mask`, each `(batch, time)`
    int32, and returns class probabilities of shape `(batch, num_labels)` in
    float32. The padding mask reaches the feedback layer, so padded tokens
    never change its state.

    Args:
        backbone: A keras-hub `BertBackbone`.
        num_labels: Number of classes, 2 or more.
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
        pooling: `"last"` feeds the head the feedback output at the last real
            token of each direction; `"mean"` feeds it the mean of the
            feedback outputs over the real tokens.
        fine_tune: Which backbone weights train: `"full"`, `"frozen"` or
            `"lora"`; see `apply_fine_tuning`.
        lora_rank: Rank of the LoRA updates when `fine_tune="lora"`.
        multilabel: Give each label its own sigmoid probability instead of
            a softmax over the labels, for texts with any number of labels.

    Returns:
        An uncompiled `keras.Model`.

    Example:

    ```python
    bundle = load_backbone("tiny")
    model = build_classifier(bundle.backbone, num_labels=2)
    ```
    """
    if pooling not in ("last", "mean"):
        raise ValueError(f"`pooling` must be 'last' or 'mean'. Received: pooling={pooling!r}.")
    if num_labels < 2 and not multilabel:
        raise ValueError(
            f"A classifier needs at least 2 labels. Received: num_labels={num_labels}."
        )

    # The pooler is not used by this model; freezing it keeps the optimizer
    # from warning on every step that it has no gradient.
    backbone.get_layer("pooled_dense").trainable = False
    apply_fine_tuning(backbone, fine_tune, lora_rank)

    # === Layers ===
    feedback = FeedbackLayer(
        feedback_units,
        feedback_steps=feedback_steps,
        dropout=feedback_dropout,
        unroll=unroll,
        seed=seed,
        return_sequences=pooling == "mean",
        name="feedback",
    )
    if bidirectional:
        feedback = keras.layers.Bidirectional(feedback, name="bidirectional_feedback")
    head_dropout = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")
    head = keras.layers.Dense(
        num_labels,
        activation="sigmoid" if multilabel else "softmax",
        dtype="float32",
        name="probabilities",
    )

    # === Functional graph ===
    inputs = {
        name: keras.Input(shape=(sequence_length,), dtype="int32", name=name)
        for name in INPUT_NAMES
    }
    sequence_output = backbone(inputs)["sequence_output"]  # (batch, time, hidden)
    features = feedback(sequence_output, mask=inputs["padding_mask"])
    if pooling == "mean":
        mask = keras.ops.cast(inputs["padding_mask"], "bool")
        features = keras.layers.GlobalAveragePooling1D(name="mean_pooling")(features, mask=mask)
    probabilities = head(head_dropout(features))
    return keras.Model(inputs, probabilities, name="feedback_classifier")


def classifier_from_config(
    model_config, backbone: keras.Model, num_labels: int, seed=None, multilabel: bool = False
):
    """Build the classifier a `ModelConfig` describes, on `backbone`.

    Args:
        model_config: The `model` section of a run's `Config`.
        backbone: A keras-hub `BertBackbone`.
        num_labels: Number of classes.
        seed: Seed for dropout.
        multilabel: Sigmoid outputs, one per label (`data.task:
            multilabel`).

    Returns:
        The output of `build_classifier`.

    Example:

    ```python
    model = classifier_from_config(Config().model, bundle.backbone, 2, seed=0)
    ```
    """
    return build_classifier(
        backbone,
        num_labels=num_labels,
        seed=seed,
        pooling=model_config.pooling,
        multilabel=multilabel,
        **feedback_arguments(model_config),
    )


def feedback_arguments(model_config) -> dict:
    """Return the arguments that a `ModelConfig` gives every model builder.

    They are the feedback layer's shape and dropout, the head's dropout and
    the fine-tuning method, shared by `build_classifier` and the tagger.

    Example:

    ```python
    build_classifier(bundle.backbone, 2, **feedback_arguments(Config().model))
    ```
    """
    return {
        "feedback_units": model_config.feedback_units,
        "feedback_steps": model_config.feedback_steps,
        "bidirectional": model_config.bidirectional,
        "feedback_dropout": model_config.feedback_dropout,
        "dropout": model_config.dropout,
        "fine_tune": model_config.fine_tune,
        "lora_rank": model_config.lora_rank,
    }


def is_multilabel(model: keras.Model) -> bool:
    """Return whether a classifier gives each label its own sigmoid probability.

    Example:

    ```python
    is_multilabel(build_classifier(bundle.backbone, 3, multilabel=True))  # True
    ```
    """
    try:
        head = model.get_layer("probabilities")
    except ValueError:
        return False
    return head.get_config().get("activation") == "sigmoid"
