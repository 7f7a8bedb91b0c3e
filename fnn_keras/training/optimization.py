"""AdamW with linear warmup and linear decay."""

from __future__ import annotations

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


def build_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
) -> keras.optimizers.AdamW:
    """Build AdamW with a warmup-then-decay schedule and decay exclusions.

    Args:
        learning_rate: Peak learning rate.
        total_steps: Optimizer steps in the whole run.
        warmup_ratio: Fraction of `total_steps` spent warming up.
        weight_decay: Decoupled weight decay, not applied to `NO_DECAY_NAMES`.

    Returns:
        A `keras.optimizers.AdamW`.

    Example:

    ```python
    optimizer = build_optimizer(1e-4, total_steps=375)
    ```
    """
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(total_steps * warmup_ratio)))
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer
