"""Fine-tuning methods: which backbone weights train, and folding LoRA back in."""

from __future__ import annotations

import keras
import numpy as np

FINE_TUNE_CHOICES = ("full", "frozen", "lora")


def apply_fine_tuning(backbone: keras.Model, method: str, lora_rank: int = 8) -> None:
    """Choose which backbone weights train, in place.

    - `full` leaves every backbone weight trainable.
    - `frozen` makes the whole backbone non-trainable: only the layers on
      top of it learn. The backbone still runs on every batch, and nothing
      is cached. Its dropout therefore keeps acting. A backbone built with
      dropout 0 feeds the head the same features every epoch.
    - `lora` calls keras-hub's `enable_lora(lora_rank)`: every backbone
      weight is frozen and the query and value projections of each
      attention layer learn a low-rank update. `merged_weights` folds the
      updates back into the kernels for saving and export.

    Args:
        backbone: A built keras-hub backbone.
        method: One of `FINE_TUNE_CHOICES`.
        lora_rank: int. Rank of the LoRA update, for `lora`.

    Example:

    ```python
    bundle = load_backbone("tiny")
    apply_fine_tuning(bundle.backbone, "lora", lora_rank=4)
    len(bundle.backbone.trainable_weights)  # 12: 2 layers x (query, value) x (a, b, bias)
    ```
    """
    if method not in FINE_TUNE_CHOICES:
        raise ValueError(
            f"`method` must be one of {', '.join(FINE_TUNE_CHOICES)}. Received: method={method!r}."
        )
    if method == "frozen":
        backbone.trainable = False
    elif method == "lora":
        check_lora_rank(backbone, lora_rank)
        backbone.enable_lora(lora_rank)


def check_lora_rank(backbone: keras.Model, lora_rank: int) -> None:
    """Raise `ValueError` unless `lora_rank` is from 1 to the backbone's hidden size.

    Example:

    ```python
    check_lora_rank(load_backbone("tiny").backbone, 8)
    ```
    """
    hidden = backbone.hidden_dim
    if (
        isinstance(lora_rank, bool)
        or not isinstance(lora_rank, int)
        or not 1 <= lora_rank <= hidden
    ):
        raise ValueError(
            f"the LoRA rank must be an integer from 1 to the backbone's hidden size {hidden}, "
            f"and 8 is usual. Received: {lora_rank!r}."
        )


def lora_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Return the layers of `model` (nested ones included) that have LoRA enabled."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, "lora_enabled", False)
    ]


def lora_variables(model: keras.Model) -> list:
    """Return the base kernel and both factors of every LoRA layer of `model`, in layer order.

    Keras 3 keeps a LoRA layer's frozen base kernel in `_kernel`. The
    public `kernel` property returns the merged kernel instead.
    """
    return [
        variable
        for layer in lora_layers(model)
        for variable in (layer._kernel, layer.lora_kernel_a, layer.lora_kernel_b)
    ]


def _is_lora_variable(variable) -> bool:
    return variable.path.rsplit("/", 1)[-1] in ("lora_kernel_a", "lora_kernel_b")


def merged_weights(model: keras.Model) -> list[np.ndarray]:
    """Return the weights of `model` with every LoRA update added to its kernel.

    The list follows `get_weights()` of the same architecture without
    LoRA, which is what `keras.saving` rebuilds from the classifier's
    config. The LoRA factors are left out. Each adapted kernel becomes
    `kernel + (alpha / rank) * a @ b`, computed in float64 and stored as
    float32. For a model without LoRA this is `model.get_weights()`.

    Args:
        model: A built model, LoRA enabled in any of its layers or not.

    Returns:
        A list of NumPy arrays.

    Example:

    ```python
    plain = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    plain.set_weights(merged_weights(model))
    ```
    """
    merged = {}
    for layer in lora_layers(model):
        # The public `kernel` property merges in the compute dtype, which is
        # bfloat16 during bfloat16 mixed-precision training, so merge here.
        base = keras.ops.convert_to_numpy(layer._kernel).astype(np.float64)
        a = keras.ops.convert_to_numpy(layer.lora_kernel_a).astype(np.float64)
        b = keras.ops.convert_to_numpy(layer.lora_kernel_b).astype(np.float64)
        update = (layer.lora_alpha / layer.lora_rank) * np.matmul(a, b)
        merged[id(layer._kernel)] = (base + update).astype(np.float32)
    weights = []
    for variable in model.weights:
        if _is_lora_variable(variable):
            continue
        value = merged.get(id(variable))
        weights.append(keras.ops.convert_to_numpy(variable) if value is None else value)
    return weights


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Count the trainable weights of `model` and all its weights, in scalars.

    Args:
        model: A built model.

    Returns:
        `{"trainable": ..., "total": ...}`.

    Example:

    ```python
    parameter_counts(model)["trainable"]
    ```
    """
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    return {"trainable": trainable, "total": total}
