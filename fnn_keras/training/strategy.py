"""Choosing and building the `tf.distribute` strategy."""

from __future__ import annotations

import logging

import tensorflow as tf

logger = logging.getLogger(__name__)


def build_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """Build a `MirroredStrategy` over all local GPUs, or the CPU without one.

    Args:
        devices: Device names to mirror over, such as `["/cpu:0", "/cpu:1"]`.
            `None` takes every local GPU, or the CPU when there is none.

    Returns:
        The strategy; build and compile the model under its `scope()`.

    Example:

    ```python
    strategy = build_strategy()
    with strategy.scope():
        model = build_classifier(...)
    ```
    """
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or ["/cpu:0"]
    strategy = tf.distribute.MirroredStrategy(devices)
    logger.info(
        "MirroredStrategy over %d replica(s): %s",
        strategy.num_replicas_in_sync,
        ", ".join(devices),
    )
    return strategy
