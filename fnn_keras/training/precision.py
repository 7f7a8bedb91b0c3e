"""Mixed precision for training, float32 for what gets saved and exported."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from fnn_keras.models.fine_tuning import merged_weights

PRECISION_POLICIES = {
    "off": "float32",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}


MIXED_PRECISION_CHOICES = ("auto", *PRECISION_POLICIES)


def resolve_mixed_precision(setting: str, gpu_capabilities=None) -> str:
    """Turn `training.mixed_precision` into one of `PRECISION_POLICIES`.

    `"auto"` picks `"bfloat16"` when every GPU has compute capability 8.0 or
    more (Ampere and later run bfloat16 at full speed and need no loss
    scaling), `"float16"` when every GPU has at least 7.0 (Volta, Turing:
    tensor cores for float16 only), and `"off"` otherwise, the CPU included.
    Other settings pass through.

    Args:
        setting: `"auto"` or a key of `PRECISION_POLICIES`.
        gpu_capabilities: `(major, minor)` of each GPU; `None` asks
            TensorFlow for the local GPUs.

    Returns:
        `"off"`, `"bfloat16"` or `"float16"`.

    Example:

    ```python
    resolve_mixed_precision("auto", gpu_capabilities=[(8, 0)])  # "bfloat16"
    ```
    """
    if setting != "auto":
        return setting
    if gpu_capabilities is None:
        gpu_capabilities = [
            tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")
        ]
    if not gpu_capabilities:
        return "off"
    lowest = min(tuple(capability) for capability in gpu_capabilities)
    if lowest >= (8, 0):
        return "bfloat16"
    if lowest >= (7, 0):
        return "float16"
    return "off"


@contextlib.contextmanager
def precision_policy(mode: str):
    """Build layers under a mixed-precision policy inside the block.

    Under `"bfloat16"` or `"float16"` layers compute in that type and keep
    float32 variables; Keras's `compile` adds loss scaling for float16. The
    global policy is set back when the block ends.

    Args:
        mode: `"off"`, `"bfloat16"` or `"float16"`.

    Example:

    ```python
    with precision_policy("bfloat16"):
        model = build_classifier(backbone, num_labels=2)
    ```
    """
    if mode not in PRECISION_POLICIES:
        raise ValueError(
            f"Unknown mixed precision {mode!r}; use one of {', '.join(PRECISION_POLICIES)}."
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISION_POLICIES[mode])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _to_float32(config):
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            name = config.get("config", {}).get("name", "")
            if name.startswith("mixed_"):
                return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _to_float32(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_to_float32(value) for value in config]
    return config


def float32_copy(model: keras.Model) -> keras.Model:
    """Return a copy of `model` that computes in float32, with its weights.

    Call it outside any distribution strategy scope: the copy has plain
    variables, ready to save, evaluate and export. Mixed-precision layers
    keep float32 variables, so no weight loses precision. LoRA updates are
    merged into their kernels, so the copy has no LoRA weights.

    Args:
        model: A built functional model, mixed precision or not.

    Returns:
        A new model with every mixed policy replaced by float32.

    Example:

    ```python
    final = float32_copy(trained_model)
    final.save("model.keras")
    ```
    """
    config = _to_float32(keras.saving.serialize_keras_object(model))
    with precision_policy("off"):
        copy = keras.saving.deserialize_keras_object(config)
    # The config carries no LoRA (keras-hub's backbone config does not
    # record it), so LoRA updates are merged into the copy's kernels.
    copy.set_weights(merged_weights(model))
    return copy
