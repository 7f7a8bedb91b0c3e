"""Input pipelines: tokenization inside `tf.data`, batching and padding."""

from __future__ import annotations

import keras_hub
import numpy as np
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


def trim_batch(features: dict, pad_to_multiple: int = 1) -> dict:
    """Cut padded columns shared by the whole batch and make the mask int32.

    The preprocessor pads every text to `sequence_length`. Columns past the
    longest text of the batch hold only padding, so cutting them changes no
    output of the model and saves its compute. The int32 mask avoids a
    failure of bool tensors in `AddN` under `MirroredStrategy` with several
    replicas.

    Args:
        features: Dict with `token_ids`, `segment_ids` and `padding_mask`,
            each `(batch, sequence_length)`.
        pad_to_multiple: Round the kept length up to a multiple of this
            (at most `sequence_length`), so that fewer distinct shapes
            reach the model; XLA compiles once per shape.

    Returns:
        The same keys, each `(batch, longest)` and int32.

    Example:

    ```python
    trimmed = trim_batch(preprocessor(tf.constant(["a", "a good film"])))
    ```
    """
    mask = tf.cast(features["padding_mask"], tf.int32)
    longest = tf.reduce_max(tf.reduce_sum(mask, axis=1))
    if pad_to_multiple > 1:
        longest = -(-longest // pad_to_multiple) * pad_to_multiple
        longest = tf.minimum(longest, tf.shape(mask)[1])
    return {
        "token_ids": tf.cast(features["token_ids"][:, :longest], tf.int32),
        "segment_ids": tf.cast(features["segment_ids"][:, :longest], tf.int32),
        "padding_mask": mask[:, :longest],
    }


def is_pair_input(texts) -> bool:
    """Return whether `texts` contains `(text, text_pair)` tuples rather than strings."""
    return len(texts) > 0 and isinstance(texts[0], (tuple, list))


def string_inputs(texts) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """Turn texts, or `(text, text_pair)` tuples, into the preprocessor's string input.

    Args:
        texts: A list of strings, or for sentence-pair tasks a list of
            `(text, text_pair)` tuples.

    Returns:
        A string tensor, or for pairs a tuple of two string tensors, which
        keras-hub's preprocessor joins as `[CLS] text [SEP] pair [SEP]`.
        Pass it as `preprocessor(x=...)`, because a positional tuple is read
        as `(x, y)`.

    Raises:
        ValueError: A pair that does not hold exactly two strings.

    Example:

    ```python
    preprocessor(x=string_inputs([("a question", "an answer")]))
    ```
    """
    if not is_pair_input(texts):
        return tf.constant(list(texts), tf.string)
    bad = [pair for pair in texts if len(pair) != 2]
    if bad:
        raise ValueError(f"A text pair must hold exactly two strings. Received: {bad[0]!r}.")
    first, second = zip(*texts, strict=True)
    return tf.constant(list(first), tf.string), tf.constant(list(second), tf.string)


def label_tensor(label_ids) -> tf.Tensor:
    """Return the targets as a tensor: int32 class ids, or float32 multi-hot rows.

    Example:

    ```python
    label_tensor([1, 0]).dtype  # tf.int32
    label_tensor(np.array([[0.0, 1.0]], np.float32)).dtype  # tf.float32
    ```
    """
    if np.ndim(label_ids) == 2:
        return tf.constant(label_ids, tf.float32)
    return tf.constant(label_ids, tf.int32)


def make_dataset(
    texts,
    label_ids: list[int] | None,
    preprocessor,
    batch_size: int,
    pad_to_multiple: int = 1,
) -> tf.data.Dataset:
    """Build a batched dataset of tokenized texts and, if given, labels, in order.

    Batches are padded to their longest text only. The last batch keeps the
    remainder, so every example is seen once per pass. Training batches come
    from `make_training_dataset`.

    Args:
        texts: The texts, or `(text, text_pair)` tuples.
        label_ids: Class ids aligned with `texts`, `(n, num_labels)`
            multi-hot rows for a multi-label task, or `None` for inputs
            only.
        preprocessor: The keras-hub preprocessor from `build_preprocessor`.
        batch_size: Global batch size.
        pad_to_multiple: See `trim_batch`.

    Returns:
        A `tf.data.Dataset` of `features` or `(features, label_ids)`.

    Example:

    ```python
    dataset = make_dataset(["good", "bad"], [1, 0], preprocessor, 2)
    ```
    """
    strings = string_inputs(texts)
    if label_ids is None:
        dataset = tf.data.Dataset.from_tensor_slices(strings)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((strings, label_tensor(label_ids)))
    dataset = dataset.batch(batch_size)

    def tokenize(*element):
        # `map` unpacks tuples: the element is the strings (one tensor or a
        # pair) without labels, and `(strings, label)` with them.
        if label_ids is None:
            strings, label = (element if len(element) > 1 else element[0]), None
        else:
            strings, label = element
        features = trim_batch(preprocessor(x=strings), pad_to_multiple)
        return features if label is None else (features, label)

    dataset = dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """Return the example order of one training epoch.

    The order depends only on `seed` and `epoch`, so a resumed run gets the
    same batches as an uninterrupted one.

    Example:

    ```python
    epoch_order(5, seed=0, epoch=2)  # a permutation of 0..4
    ```
    """
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, pool_batches: int = 64
) -> list[np.ndarray]:
    """Split one epoch into batches of texts of similar length.

    The epoch's `epoch_order` is cut into pools of `pool_batches` batches.
    Each pool is sorted by token length and cut into batches, and then the
    batches are shuffled. Every example is in exactly one batch. Only the
    epoch's last pool can leave a smaller batch, so an epoch still has
    `ceil(len(lengths) / batch_size)` batches. Padding each batch to its
    longest text then wastes little compute.

    Args:
        lengths: Token count of each example.
        batch_size: Global batch size.
        seed: Seed of the epoch orders.
        epoch: The epoch (0-based).
        pool_batches: Batches per sorted pool: larger pools pad less and
            mix less.

    Returns:
        The epoch's batches, as arrays of example indices.

    Example:

    ```python
    batches = bucketed_batches(np.array([5, 40, 6, 38]), 2, seed=0, epoch=0)
    ```
    """
    order = epoch_order(len(lengths), seed, epoch)
    pool_size = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool_size):
        pool = order[start : start + pool_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    shuffled = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return [batches[i] for i in shuffled]


def make_training_dataset(
    texts,
    label_ids: list[int],
    preprocessor,
    batch_size: int,
    seed: int,
    first_epoch: int,
    end_epoch: int,
    skip_batches: int = 0,
    lengths: np.ndarray | None = None,
    pad_to_multiple: int = 1,
) -> tf.data.Dataset:
    """Build the training batches of epochs `first_epoch` to `end_epoch - 1`.

    Each epoch visits every example once, in `epoch_order`, and its last
    batch keeps the remainder, so an epoch has `ceil(len(texts) /
    batch_size)` batches. With `lengths`, batches group texts of similar
    length instead (`bucketed_batches`), with the same count. `skip_batches`
    drops that many batches from the start of `first_epoch`: the ones a
    resumed run has already trained on.

    Args:
        texts: The training texts, or `(text, text_pair)` tuples.
        label_ids: Class ids aligned with `texts`, or `(n, num_labels)`
            multi-hot rows.
        preprocessor: The keras-hub preprocessor from `build_preprocessor`.
        batch_size: Global batch size.
        seed: Seed of the per-epoch orders.
        first_epoch: First epoch (0-based) to produce.
        end_epoch: One past the last epoch to produce.
        skip_batches: Batches of `first_epoch` to leave out.
        lengths: Token count of each text, to batch by length; `None`
            batches in epoch order.
        pad_to_multiple: See `trim_batch`.

    Returns:
        A finite `tf.data.Dataset` of `(features, label_ids)` batches; pass
        `steps_per_epoch` to `fit`.

    Example:

    ```python
    dataset = make_training_dataset(texts, labels, preprocessor, 32, 0, 0, 5)
    model.fit(dataset, epochs=5, steps_per_epoch=math.ceil(len(texts) / 32))
    ```
    """
    strings = string_inputs(texts)
    batches = []
    for epoch in range(first_epoch, end_epoch):
        if lengths is None:
            order = epoch_order(len(texts), seed, epoch)
            batches.extend(order[i : i + batch_size] for i in range(0, len(order), batch_size))
        else:
            batches.extend(bucketed_batches(np.asarray(lengths), batch_size, seed, epoch))
    batches = batches[skip_batches:]
    label_table = label_tensor(label_ids)
    indices = tf.RaggedTensor.from_row_lengths(
        np.concatenate(batches).astype(np.int64), [len(batch) for batch in batches]
    )
    dataset = tf.data.Dataset.from_tensor_slices(indices)

    def tokenize(indices):
        batch = tf.nest.map_structure(lambda table: tf.gather(table, indices), strings)
        features = trim_batch(preprocessor(x=batch), pad_to_multiple)
        return features, tf.gather(label_table, indices)

    dataset = dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
