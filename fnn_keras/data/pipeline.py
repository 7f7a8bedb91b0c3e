"""Input pipelines: tokenization inside `tf.data`, batching and padding."""

from __future__ import annotations

import keras_hub
import tensorflow as tf


def build_preprocessor(tokenizer, sequence_length: int):
    """Build the keras-hub preprocessor that turns raw strings into model inputs.

    Args:
        tokenizer: A keras-hub `BertTokenizer`.
        sequence_length: Maximum tokens per text, `[CLS]` and `[SEP]`
            included; longer texts are truncated.

    Returns:
        A `keras_hub.models.BertTextClassifierPreprocessor`.

    Example:

    ```python
    preprocessor = build_preprocessor(load_backbone("tiny").tokenizer, 64)
    features = preprocessor(tf.constant(["a good film"]))
    ```
    """
    # For one segment, "waterfall" truncation keeps the same tokens as the
    # default "round_robin", and it builds from core TensorFlow ops, while
    # "round_robin" needs the TF Text op RoundRobinTrim (TF Serving < 2.20
    # lacks it).
    return keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length, truncate="waterfall"
    )


def trim_batch(features: dict) -> dict:
    """Cut padded columns shared by the whole batch and make the mask int32.

    The preprocessor pads every text to `sequence_length`. Columns past the
    longest text of the batch hold only padding, so cutting them changes no
    output of the model and saves its compute. The int32 mask avoids a
    failure of bool tensors in `AddN` under `MirroredStrategy` with several
    replicas.

    Args:
        features: Dict with `token_ids`, `segment_ids` and `padding_mask`,
            each `(batch, sequence_length)`.

    Returns:
        The same keys, each `(batch, longest)` and int32.

    Example:

    ```python
    trimmed = trim_batch(preprocessor(tf.constant(["a", "a good film"])))
    ```
    """
    mask = tf.cast(features["padding_mask"], tf.int32)
    longest = tf.reduce_max(tf.reduce_sum(mask, axis=1))
    return {
        "token_ids": tf.cast(features["token_ids"][:, :longest], tf.int32),
        "segment_ids": tf.cast(features["segment_ids"][:, :longest], tf.int32),
        "padding_mask": mask[:, :longest],
    }


def make_dataset(
    texts: list[str],
    label_ids: list[int] | None,
    preprocessor,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Build a batched dataset of tokenized texts and, if given, labels.

    Batches are padded to their longest text only. The last batch keeps the
    remainder, so every example is seen once per pass.

    Args:
        texts: The texts.
        label_ids: Class ids aligned with `texts`, or `None` for inputs only.
        preprocessor: The keras-hub preprocessor from `build_preprocessor`.
        batch_size: Global batch size.
        shuffle: Reshuffle the examples every epoch.
        seed: Shuffle seed.

    Returns:
        A `tf.data.Dataset` of `features` or `(features, label_ids)`.

    Example:

    ```python
    dataset = make_dataset(["good", "bad"], [1, 0], preprocessor, 2)
    ```
    """
    if label_ids is None:
        dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(
            (tf.constant(texts, tf.string), tf.constant(label_ids, tf.int32))
        )
    if shuffle:
        dataset = dataset.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def tokenize(text, label=None):
        features = trim_batch(preprocessor(text))
        return features if label is None else (features, label)

    dataset = dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
