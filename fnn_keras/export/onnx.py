"""ONNX export with symbolic batch and sequence axes, checked and run."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from fnn_keras.models.classifier import INPUT_NAMES

logger = logging.getLogger(__name__)

# ONNX opset of every export; onnxruntime 1.2x runs it and it has Erf.
OPSET = 17

_handlers_registered = False


def _register_erfc_handler() -> None:
    """Teach tf2onnx to convert TensorFlow's `Erfc` as `1 - Erf`.

    The exact GELU, `tf.nn.gelu(approximate=False)`, computes
    `0.5 * x * erfc(-x / sqrt(2))`, and tf2onnx 1.17 has no handler for
    `Erfc` ("Unsupported ops: Erfc").
    """
    global _handlers_registered
    if _handlers_registered:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class _Erfc:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            node.type = "Erf"
            dtype = ctx.get_dtype(node.output[0])
            one = ctx.make_const(
                utils.make_name("erfc_one"),
                np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)),
            )
            complement = ctx.insert_new_node_on_output(
                "Sub",
                node.output[0],
                name=utils.make_name("erfc"),
                inputs=[one.output[0], node.output[0]],
            )
            ctx.copy_dtype(node.output[0], complement.output[0])
            ctx.copy_shape(node.output[0], complement.output[0])

    _handlers_registered = True


def export_onnx(model, path: str) -> str:
    """Export the classifier to ONNX with symbolic batch and sequence axes.

    The inputs are `token_ids`, `segment_ids` and `padding_mask`, int32 of
    shape `(batch, sequence)`; the output is the probabilities. The file is
    checked with `onnx.checker`.

    Args:
        model: The trained classifier taking token-id dictionaries.
        path: Destination `.onnx` file.

    Returns:
        `path`.

    Example:

    ```python
    export_onnx(model, "exported/run/onnx/model.onnx")
    ```
    """
    import onnx

    _register_erfc_handler()
    # tf2onnx logs every graph rewrite at INFO, hundreds of lines for BERT.
    logging.getLogger("tf2onnx").setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    signature = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES}
    model.export(
        path,
        format="onnx",
        input_signature=[signature],
        opset_version=OPSET,
        verbose=False,
    )
    onnx.checker.check_model(onnx.load(path))
    logger.info("Exported ONNX (opset %d) to %s", OPSET, path)
    return path
