"""Running each exported artifact and comparing it with the Keras model."""

from __future__ import annotations

import numpy as np

from fnn_keras.data.pipeline import make_dataset, string_inputs
from fnn_keras.models.classifier import INPUT_NAMES


def keras_probabilities(model, preprocessor, texts: list, batch_size: int = 32):
    """Probabilities of the Keras model, batches padded to their longest text.

    `texts` contains strings, or `(text, text_pair)` tuples for a pair model.
    """
    dataset = make_dataset(texts, None, preprocessor, batch_size)
    return np.asarray(model.predict(dataset, verbose=0), dtype=np.float32)


def fixed_length_features(preprocessor, texts: list) -> dict[str, np.ndarray]:
    """Token ids of `texts` (or text pairs), each padded to the preprocessor's sequence length.

    This is what a client holding `vocab.txt` and `tokenizer.json` produces
    for the TFLite and ONNX models.

    Example:

    ```python
    features = fixed_length_features(preprocessor, ["a fine film"])
    features["token_ids"].shape  # (1, sequence_length)
    ```
    """
    features = preprocessor(x=string_inputs(texts))
    return {name: np.asarray(features[name], dtype=np.int32) for name in INPUT_NAMES}


def trimmed(features: dict, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows `start:stop` of `features`, cut to their longest text."""
    rows = {name: value[start:stop] for name, value in features.items()}
    longest = int(rows["padding_mask"].sum(axis=1).max())
    return {name: value[:, :longest] for name, value in rows.items()}


def run_in_batches(function, features: dict, batch_size: int, trim: bool) -> np.ndarray:
    """Call `function(features_batch)` over row batches and stack the results."""
    count = len(features["token_ids"])
    outputs = []
    for start in range(0, count, batch_size):
        if trim:
            batch = trimmed(features, start, start + batch_size)
        else:
            batch = {name: value[start : start + batch_size] for name, value in features.items()}
        outputs.append(np.asarray(function(batch), dtype=np.float32))
    return np.concatenate(outputs)


def compare(
    reference: np.ndarray,
    probabilities: np.ndarray,
    label_ids: np.ndarray | None,
    label_thresholds: list[float] | None = None,
) -> dict:
    """Compare an artifact's probabilities with the Keras model's.

    Args:
        reference: Keras probabilities, `(n, num_labels)`.
        probabilities: The artifact's probabilities for the same texts.
        label_ids: True class ids, or `None` when the texts are unlabelled.
        label_thresholds: A multi-label model's threshold per label, or
            `None`.

    Returns:
        `max_abs_diff`, `top1_agreement`, with thresholds
        `label_set_agreement` (the share of texts with the same predicted
        label set), and with labels `accuracy` and `keras_accuracy`.

    Example:

    ```python
    compare(keras_probs, tflite_probs, label_ids)["max_abs_diff"]
    ```
    """
    result = {
        "examples": int(len(reference)),
        "max_abs_diff": float(np.abs(probabilities - reference).max()),
        "top1_agreement": float((probabilities.argmax(axis=1) == reference.argmax(axis=1)).mean()),
    }
    if label_thresholds is not None:
        thresholds = np.asarray(label_thresholds, np.float32)
        same = np.all((probabilities >= thresholds) == (reference >= thresholds), axis=1)
        result["label_set_agreement"] = float(same.mean())
    if label_ids is not None:
        result["accuracy"] = float((probabilities.argmax(axis=1) == label_ids).mean())
        result["keras_accuracy"] = float((reference.argmax(axis=1) == label_ids).mean())
    return result
