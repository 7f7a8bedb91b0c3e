"""AdamW with linear warmup and linear decay."""

from __future__ import annotations

import re

import keras
from keras import ops

# Variables that weight decay leaves alone: biases, LayerNorm scales and
# offsets (keras-hub names them gamma and beta) and embedding tables. Matched
# against each variable's name as a regular expression.
NO_DECAY_NAMES = ["bias", "gamma", "beta", "embeddings"]


@keras.saving.register_keras_serializable(package="fnn_keras")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate rising linearly to a peak, then falling linearly to 0.

    Args:
        peak_learning_rate: float. The rate reached at the end of warmup.
        total_steps: int. Steps of the whole run; the rate is 0 from here on.
        warmup_steps: int. Steps of the linear warmup from 0.

    Example:

    ```python
    schedule = WarmupLinearDecay(1e-4, total_steps=1000, warmup_steps=100)
    float(schedule(50))  # 5e-05
    ```
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                "Need total_steps >= 1 and 0 <= warmup_steps <= total_steps. "
                f"Received: total_steps={total_steps}, "
                f"warmup_steps={warmup_steps}."
            )
        self.peak_learning_rate = peak_learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = ops.cast(self.peak_learning_rate, "float32")
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        decay = ops.cast(max(self.total_steps - self.warmup_steps, 1), "float32")
        rising = peak * step / warmup
        falling = peak * (ops.cast(self.total_steps, "float32") - step) / decay
        rate = ops.where(step < self.warmup_steps, rising, falling)
        return ops.maximum(rate, 0.0)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


def _variable_path(variable) -> str:
    # Under `tf.distribute`, `update_step` receives the per-device
    # `tf.Variable`, named like "layer/kernel:0" or "layer/kernel/replica_1:0",
    # instead of the Keras variable with its `path`.
    path = getattr(variable, "path", None)
    if path is None:
        path = variable.name.split(":")[0]
        path = re.sub(r"/replica_\d+$", "", path)
    return path


@keras.saving.register_keras_serializable(package="fnn_keras")
class ScaledAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is multiplied for chosen variables.

    A classifier head trained from scratch learns well at a learning rate
    that would disturb a pretrained backbone. Scaling the gradient does not
    help, since Adam's update is invariant to it; this optimizer scales the
    learning rate itself for every variable whose path starts with one of
    `learning_rate_multipliers`' keys.

    Args:
        learning_rate_multipliers: dict of variable path prefix to factor,
            such as `{"probabilities/": 10.0}`.
        **kwargs: Arguments of `keras.optimizers.AdamW`.

    Example:

    ```python
    optimizer = ScaledAdamW({"probabilities/": 10.0}, learning_rate=5e-5)
    ```
    """

    def __init__(self, learning_rate_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate_multipliers = dict(learning_rate_multipliers or {})

    def _multiplier(self, variable) -> float:
        path = _variable_path(variable)
        for prefix, factor in self.learning_rate_multipliers.items():
            if path.startswith(prefix):
                return factor
        return 1.0

    def update_step(self, gradient, variable, learning_rate):
        factor = self._multiplier(variable)
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["learning_rate_multipliers"] = self.learning_rate_multipliers
        return config


def build_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    learning_rate_multipliers: dict[str, float] | None = None,
) -> keras.optimizers.AdamW:
    """Build AdamW with a warmup-then-decay schedule and decay exclusions.

    Args:
        learning_rate: Peak learning rate.
        total_steps: Optimizer steps in the whole run.
        warmup_ratio: Fraction of `total_steps` spent warming up.
        weight_decay: Decoupled weight decay, not applied to `NO_DECAY_NAMES`.
        learning_rate_multipliers: Variable path prefix to learning-rate
            factor; see `ScaledAdamW`.

    Returns:
        A `keras.optimizers.AdamW`.

    Example:

    ```python
    optimizer = build_optimizer(1e-4, total_steps=375)
    ```
    """
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(total_steps * warmup_ratio)))
    optimizer = ScaledAdamW(
        learning_rate_multipliers,
        learning_rate=schedule,
        weight_decay=weight_decay,
        epsilon=1e-6,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer


def learning_rate_multipliers(
    model: keras.Model, backbone: keras.Model, head_multiplier: float, layer_decay: float
) -> dict[str, float]:
    """Map variable path prefixes to learning-rate factors.

    Layers outside the backbone (feedback layer, head) get `head_multiplier`.
    With `layer_decay < 1`, backbone transformer layer `i` of `n` gets
    `layer_decay ** (n - 1 - i)` and the embedding layers `layer_decay ** n`.
    """
    multipliers = {
        f"{layer.name}/": head_multiplier
        for layer in model.layers
        if layer is not backbone and layer.weights
    }
    if layer_decay < 1:
        depth = backbone.num_layers
        for layer in backbone.layers:
            if not layer.weights or layer.name == "pooled_dense":
                continue
            if layer.name.startswith("transformer_layer_"):
                index = int(layer.name.rsplit("_", 1)[1])
                multipliers[f"{layer.name}/"] = layer_decay ** (depth - 1 - index)
            else:
                multipliers[f"{layer.name}/"] = layer_decay**depth
    return multipliers
