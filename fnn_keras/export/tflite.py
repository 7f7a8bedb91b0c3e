"""TFLite export for phones: fixed lengths, unrolled loop, builtin ops only."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable, Iterable

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from fnn_keras.layers import FeedbackLayer
from fnn_keras.models.classifier import INPUT_NAMES, build_classifier, is_multilabel

logger = logging.getLogger(__name__)

# The shortest signature of a TFLite file; longer ones double up to the
# sequence length.
MIN_SIGNATURE_LENGTH = 16

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


def signature_lengths(sequence_length: int) -> list[int]:
    """Return the fixed lengths a TFLite file has a signature for.

    Powers of two from 16 below `sequence_length`, then `sequence_length`
    itself: a text runs at the shortest length that fits it, so a short
    text costs a fraction of a padded one.

    Example:

    ```python
    signature_lengths(128)  # [16, 32, 64, 128]
    ```
    """
    lengths = []
    length = MIN_SIGNATURE_LENGTH
    while length < sequence_length:
        lengths.append(length)
        length *= 2
    return [*lengths, sequence_length]


def signature_name(length: int) -> str:
    """Return the TFLite signature key for inputs of `length` tokens."""
    return f"length_{length}"


def rebuild_unrolled(model: keras.Model) -> keras.Model:
    """Rebuild a classifier whose feedback loop unrolls at static lengths.

    A `tf.while_loop` over a dynamic length needs Flex ops in TFLite, which
    mobile LiteRT runtimes lack; an unrolled loop over a static length
    converts to builtin ops. The copy takes any length, and each traced
    signature with a fixed length unrolls to that length. It shares no
    variables with `model` but has the same weights.

    Args:
        model: A classifier from `build_classifier`.

    Returns:
        A new `keras.Model` with the same weights.

    Example:

    ```python
    mobile = rebuild_unrolled(model)
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
        unroll=True,
        pooling="mean" if feedback.return_sequences else "last",
        multilabel=is_multilabel(model),
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
    """Convert a classifier to one TFLite variant, builtin ops only.

    The file has one signature per length of `signature_lengths`, named
    by `signature_name`, each taking a batch of one text; the weights are
    stored once. `Model.export(format="litert")` writes a single
    signature, so this follows its route (a Keras `ExportArchive` saved
    as a SavedModel, then `TFLiteConverter.from_saved_model`) with one
    endpoint per length.

    Args:
        model: The output of `rebuild_unrolled`.
        path: Destination `.tflite` file.
        variant: One of `VARIANTS`.
        sequence_length: The longest signature's length.
        representative_inputs: For `full_int8`, a function returning an
            iterable of input dicts (batch of 1, any length up to
            `sequence_length`) from training texts.

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
    if variant == "full_int8" and representative_inputs is None:
        raise ValueError("The full_int8 variant needs representative_inputs.")
    lengths = signature_lengths(sequence_length)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for length in lengths:
        archive.add_endpoint(
            signature_name(length),
            functools.partial(model.__call__, training=False),
            input_signature=[
                {name: tf.TensorSpec([1, length], tf.int32, name=name) for name in INPUT_NAMES}
            ],
        )
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=[signature_name(length) for length in lengths]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if variant != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif variant == "full_int8":

            def representative_dataset():
                # Multi-signature calibration takes (signature key, inputs).
                for features in representative_inputs():
                    inputs = fit_to_signature(features, lengths)
                    yield signature_name(inputs["token_ids"].shape[1]), inputs

            converter.representative_dataset = representative_dataset
            # Integer kernels inside; int32 ids in and float32
            # probabilities out, as in the other variants.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        tflite_model = converter.convert()
    with open(path, "wb") as file:
        file.write(tflite_model)
    return path


def fit_to_signature(features: dict, lengths: list[int]) -> dict:
    """Cut or pad one text's features to the shortest signature length that fits it.

    Args:
        features: Dict of `(1, any)` int arrays, padded or not.
        lengths: The file's signature lengths, ascending.

    Returns:
        The dict with every array `(1, length)` int32.

    Example:

    ```python
    inputs = fit_to_signature(features, [16, 32, 64, 128])
    ```
    """
    real = int(np.asarray(features["padding_mask"]).sum())
    length = next((length for length in lengths if length >= real), lengths[-1])
    fitted = {}
    for name in INPUT_NAMES:
        value = np.asarray(features[name], dtype=np.int32)[:, :length]
        fitted[name] = np.pad(value, [(0, 0), (0, length - value.shape[1])])
    return fitted


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
    """Return the sorted operator names used anywhere in a `.tflite` file.

    The names come from the file's operator-code table, which covers every
    signature's subgraph. Flex (select TensorFlow) ops keep their name,
    such as `FlexErf`; other custom ops show as `CUSTOM:<name>`.

    Example:

    ```python
    tflite_op_names("model_float32.tflite")  # ["ADD", "BATCH_MATMUL", ...]
    ```
    """
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as file:
        model = schema.Model.GetRootAsModel(file.read(), 0)
    builtin_names = {
        code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()
    }
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes past 127 live only in BuiltinCode; older files only in the
        # deprecated field.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = (code.CustomCode() or b"").decode()
            names.add(custom if custom.startswith("Flex") else f"CUSTOM:{custom}")
        else:
            names.add(builtin_names.get(builtin, f"UNKNOWN:{builtin}"))
    return sorted(names)


def non_builtin_ops(op_names: list[str]) -> list[str]:
    """Return the Flex and custom ops among `op_names`."""
    return [
        name
        for name in op_names
        if name.startswith(("Flex", "CUSTOM", "UNKNOWN")) or name == "DELEGATE"
    ]


class TFLiteRunner:
    """Runs a `.tflite` classifier in LiteRT with no Flex delegate.

    Each text runs, alone, through the shortest signature that fits it.

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
        names = self.interpreter.get_signature_list()
        self.lengths = sorted(int(name.rsplit("_", 1)[1]) for name in names)
        self.runners = {
            length: self.interpreter.get_signature_runner(signature_name(length))
            for length in self.lengths
        }

    def __call__(self, features: dict) -> np.ndarray:
        rows = []
        for i in range(len(features["token_ids"])):
            inputs = fit_to_signature(
                {name: features[name][i : i + 1] for name in INPUT_NAMES}, self.lengths
            )
            outputs = self.runners[inputs["token_ids"].shape[1]](**inputs)
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
        sequence_length: The longest signature length (the training one).
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
    unrolled = rebuild_unrolled(model)
    results = {}
    for variant in variants:
        path = os.path.join(directory, f"model_{variant}.tflite")
        try:
            convert_variant(unrolled, path, variant, sequence_length, representative_inputs)
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
