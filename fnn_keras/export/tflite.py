"""TFLite export for phones: fixed length, unrolled loop, builtin ops only."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from fnn_keras.layers import FeedbackLayer
from fnn_keras.models.classifier import INPUT_NAMES, build_classifier

logger = logging.getLogger(__name__)

# Variant name to what it does to the weights and activations.
VARIANTS = {
    "float32": "float32 weights and activations",
    "float16": "float16 weights, float32 activations",
    "dynamic_int8": "int8 weights, activations quantized on the fly",
    "full_int8": "int8 weights and activations, calibrated on training texts",
}


def _find_layers(model: keras.Model):
    backbones = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    wrapper = None
    feedback = None
    for layer in model.layers:
        if isinstance(layer, FeedbackLayer):
            feedback = layer
        elif isinstance(layer, keras.layers.Bidirectional):
            wrapper, feedback = layer, layer.forward_layer
    if len(backbones) != 1 or feedback is None:
        raise ValueError(
            "Expected a model from build_classifier, with one keras-hub backbone "
            "and a FeedbackLayer."
        )
    return backbones[0], wrapper, feedback


def rebuild_fixed_length(model: keras.Model, sequence_length: int) -> keras.Model:
    """Rebuild a classifier with a fixed sequence length and an unrolled loop.

    A `tf.while_loop` over a dynamic length needs Flex ops in TFLite, which
    mobile LiteRT runtimes lack; an unrolled loop over a static length
    converts to builtin ops. The copy shares no variables with `model` but
    holds the same weights.

    Args:
        model: A classifier from `build_classifier`.
        sequence_length: The fixed time dimension.

    Returns:
        A new `keras.Model` with the same weights.

    Example:

    ```python
    mobile = rebuild_fixed_length(model, 128)
    ```
    """
    backbone, wrapper, feedback = _find_layers(model)
    cell = feedback.cell
    backbone_copy = backbone.__class__.from_config(backbone.get_config())
    dropout = model.get_layer("head_dropout").rate
    clone = build_classifier(
        backbone_copy,
        num_labels=model.output_shape[-1],
        feedback_units=cell.units,
        feedback_steps=cell.feedback_steps,
        bidirectional=wrapper is not None,
        feedback_dropout=cell.dropout,
        dropout=dropout,
        sequence_length=sequence_length,
        unroll=True,
        pooling="mean" if feedback.return_sequences else "last",
    )
    clone.set_weights(model.get_weights())
    return clone


def convert_variant(
    model: keras.Model,
    path: str,
    variant: str,
    sequence_length: int,
    representative_inputs: Callable[[], Iterable[dict]] | None = None,
) -> str:
    """Convert a fixed-length classifier to one TFLite variant, builtin ops only.

    Args:
        model: The output of `rebuild_fixed_length`.
        path: Destination `.tflite` file.
        variant: One of `VARIANTS`.
        sequence_length: The model's fixed time dimension.
        representative_inputs: For `full_int8`, a function returning an
            iterable of input dicts (batch of 1) from training texts.

    Returns:
        `path`.

    Raises:
        ValueError: Unknown variant, or `full_int8` without calibration data.

    Example:

    ```python
    convert_variant(mobile, "model_float16.tflite", "float16", 128)
    ```
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown TFLite variant {variant!r}. Valid: {', '.join(VARIANTS)}.")
    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if variant == "float16":
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
        options["target_spec"]["supported_types"] = [tf.float16]
    elif variant == "dynamic_int8":
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    elif variant == "full_int8":
        if representative_inputs is None:
            raise ValueError("The full_int8 variant needs representative_inputs.")
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]

        def representative_dataset():
            for features in representative_inputs():
                yield {name: features[name] for name in INPUT_NAMES}

        options["representative_dataset"] = representative_dataset
        # Integer kernels inside; float input ids and output probabilities
        # keep the interface of the other variants.
        options["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    signature = {
        name: tf.TensorSpec([1, sequence_length], tf.int32, name=name) for name in INPUT_NAMES
    }
    model.export(path, format="litert", input_signature=[signature], verbose=False, **options)
    return path


def _interpreter(path: str, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate, the op list shows the model's own
    # operators instead of a DELEGATE node; with it, float models run several
    # times faster. Neither loads the Flex delegate.
    resolver = (
        OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return Interpreter(model_path=path, experimental_op_resolver_type=resolver)


def tflite_op_names(path: str) -> list[str]:
    """Return the sorted operator names in a `.tflite` file.

    Flex (select TensorFlow) ops and custom ops show up as names outside
    the builtin set, such as `FlexErf` or `CUSTOM`.

    Example:

    ```python
    tflite_op_names("model_float32.tflite")  # ["ADD", "BATCH_MATMUL", ...]
    ```
    """
    interpreter = _interpreter(path, delegates=False)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def non_builtin_ops(op_names: list[str]) -> list[str]:
    """Return the Flex and custom ops among `op_names`."""
    return [name for name in op_names if name.startswith("Flex") or name in ("CUSTOM", "DELEGATE")]


class TFLiteRunner:
    """Runs a `.tflite` classifier in LiteRT with no Flex delegate.

    Args:
        path: The `.tflite` file.

    Example:

    ```python
    runner = TFLiteRunner("model_float32.tflite")
    probabilities = runner(features)  # features: dict of (n, length) int32
    ```
    """

    def __init__(self, path: str):
        self.interpreter = _interpreter(path)
        self.runner = self.interpreter.get_signature_runner()

    def __call__(self, features: dict) -> np.ndarray:
        rows = []
        count = len(features["token_ids"])
        for i in range(count):
            inputs = {
                name: np.asarray(features[name][i : i + 1], dtype=np.int32) for name in INPUT_NAMES
            }
            outputs = self.runner(**inputs)
            rows.append(next(iter(outputs.values()))[0])
        return np.stack(rows).astype(np.float32)


def export_tflite_variants(
    model: keras.Model,
    directory: str,
    sequence_length: int,
    variants: list[str],
    representative_inputs: Callable[[], Iterable[dict]] | None = None,
) -> dict[str, dict]:
    """Convert every requested variant, recording failures instead of raising.

    Args:
        model: The trained classifier (any sequence length).
        directory: Destination directory; files are `model_<variant>.tflite`.
        sequence_length: The fixed time dimension of the exports.
        variants: Names from `VARIANTS`.
        representative_inputs: Calibration data for `full_int8`.

    Returns:
        Variant name to `{"path": ...}` or `{"error": ...}`.

    Example:

    ```python
    results = export_tflite_variants(model, "exported/run/tflite", 128, ["float32"])
    ```
    """
    os.makedirs(directory, exist_ok=True)
    fixed = rebuild_fixed_length(model, sequence_length)
    results = {}
    for variant in variants:
        path = os.path.join(directory, f"model_{variant}.tflite")
        try:
            convert_variant(fixed, path, variant, sequence_length, representative_inputs)
            unsupported = non_builtin_ops(tflite_op_names(path))
            if unsupported:
                raise ValueError(f"non-builtin ops in the file: {', '.join(unsupported)}")
        except Exception as error:  # noqa: BLE001  (a converter crash fails only its variant)
            lines = str(error).strip().splitlines() or [""]
            message = f"{error.__class__.__name__}: {lines[-1]}"
            logger.error("TFLite %s conversion failed: %s", variant, message)
            if os.path.exists(path):
                os.remove(path)
            results[variant] = {"error": message}
            continue
        logger.info("Exported TFLite %s to %s", variant, path)
        results[variant] = {"path": path}
    return results
