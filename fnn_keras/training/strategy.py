"""Choosing and building the `tf.distribute` strategy."""

from __future__ import annotations

import json
import logging

import tensorflow as tf

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")


class StrategyError(ValueError):
    """Raised when the requested strategy cannot run on this machine."""


def cluster_from_tf_config(tf_config: str | None) -> dict | None:
    """Parse `TF_CONFIG` and return its `cluster` mapping, or `None`.

    Args:
        tf_config: The value of the `TF_CONFIG` environment variable, or
            `None` when it is not set.

    Returns:
        The cluster, such as `{"worker": ["host1:2222", "host2:2222"]}`, or
        `None` when `tf_config` is `None` or names no cluster.

    Raises:
        StrategyError: `tf_config` is empty or not a JSON object.

    Example:

    ```python
    cluster_from_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {}}')
    ```
    """
    parsed = _parse_tf_config(tf_config)
    return None if parsed is None else parsed.get("cluster") or None


def _parse_tf_config(tf_config: str | None) -> dict | None:
    if tf_config is None:
        return None
    if not tf_config.strip():
        raise StrategyError("TF_CONFIG is set but empty; unset it or give the cluster and task.")
    try:
        parsed = json.loads(tf_config)
    except json.JSONDecodeError as error:
        raise StrategyError(
            f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}); "
            'set it to {"cluster": {...}, "task": {...}} or unset it.'
        ) from None
    if not isinstance(parsed, dict):
        raise StrategyError("TF_CONFIG must be a JSON object with 'cluster' and 'task'.")
    return parsed


def _check_cluster(tf_config: str) -> None:
    """Raise `StrategyError` unless `TF_CONFIG` names a cluster and a task in it."""
    parsed = _parse_tf_config(tf_config)
    cluster, task = parsed.get("cluster"), parsed.get("task")
    if not isinstance(cluster, dict) or not all(
        isinstance(hosts, list) and hosts for hosts in cluster.values()
    ):
        raise StrategyError(
            'TF_CONFIG "cluster" must map each task type to a list of "host:port" '
            f"addresses. Received: {cluster!r}."
        )
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise StrategyError(
            f'TF_CONFIG "task" must name a type from the cluster ({", ".join(cluster)}) '
            f'and an index, such as {{"type": "worker", "index": 0}}. Received: {task!r}.'
        )
    index, hosts = task.get("index"), cluster[task["type"]]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(hosts):
        raise StrategyError(
            f"TF_CONFIG task index must be 0 to {len(hosts) - 1} for the {len(hosts)} "
            f'"{task["type"]}" address(es). Received: {index!r}.'
        )


def resolve_strategy_kind(kind: str, tf_config: str | None) -> str:
    """Turn `"auto"` into a concrete strategy name.

    Args:
        kind: One of `STRATEGIES`.
        tf_config: The value of `TF_CONFIG`, or `None`.

    Returns:
        `"multi_worker"` for `"auto"` when `TF_CONFIG` names a cluster, else
        `"mirrored"` for `"auto"`; any other `kind` unchanged.

    Example:

    ```python
    resolve_strategy_kind("auto", None)  # "mirrored"
    ```
    """
    if kind not in STRATEGIES:
        raise StrategyError(f"Unknown strategy {kind!r}; use one of {', '.join(STRATEGIES)}.")
    if kind != "auto":
        return kind
    return "multi_worker" if cluster_from_tf_config(tf_config) else "mirrored"


def build_strategy(
    kind: str = "mirrored",
    devices: list[str] | None = None,
    tf_config: str | None = None,
) -> tf.distribute.Strategy:
    """Build the distribution strategy that training runs under.

    - `mirrored`: `MirroredStrategy` over `devices`, by default every local
      GPU, or the CPU when there is none.
    - `multi_worker`: `MultiWorkerMirroredStrategy` over the cluster in
      `TF_CONFIG`, mirroring each worker's local GPUs (or CPU).
    - `one_device`: `OneDeviceStrategy` on the first GPU, or the CPU.
    - `auto`: `multi_worker` when `TF_CONFIG` names a cluster, else
      `mirrored`.

    Build it before any other TensorFlow op runs: the multi-worker strategy
    configures the runtime's collective ops, which TensorFlow allows only at
    startup.

    Args:
        kind: One of `STRATEGIES`.
        devices: Device names for `mirrored`, such as `["/cpu:0", "/cpu:1"]`.
        tf_config: The value of `TF_CONFIG`; needed for `multi_worker`.

    Returns:
        The strategy; build and compile the model under its `scope()`.

    Raises:
        StrategyError: `multi_worker` without a cluster in `TF_CONFIG`, or an
            unknown `kind`.

    Example:

    ```python
    strategy = build_strategy("mirrored")
    with strategy.scope():
        model = build_classifier(...)
    ```
    """
    kind = resolve_strategy_kind(kind, tf_config)
    if kind == "multi_worker":
        cluster = cluster_from_tf_config(tf_config)
        if not cluster:
            raise StrategyError(
                "--strategy multi_worker needs TF_CONFIG naming the cluster and this "
                'worker\'s task, e.g. {"cluster": {"worker": ["host1:12345", '
                '"host2:12345"]}, "task": {"type": "worker", "index": 0}}.'
            )
        _check_cluster(tf_config)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        logger.info(
            "MultiWorkerMirroredStrategy: %d replica(s) in all; this is %s %d of %s",
            strategy.num_replicas_in_sync,
            resolver.task_type,
            resolver.task_id,
            json.dumps(cluster),
        )
        return strategy
    if cluster_from_tf_config(tf_config):
        logger.warning(
            "TF_CONFIG names a cluster, but --strategy %s trains on this machine only.", kind
        )
    # Listing logical devices starts the runtime, which the multi-worker
    # strategy must configure first.
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if kind == "one_device":
        device = (gpus or ["/cpu:0"])[0]
        logger.info("OneDeviceStrategy on %s", device)
        return tf.distribute.OneDeviceStrategy(device)
    devices = devices or gpus or ["/cpu:0"]
    strategy = tf.distribute.MirroredStrategy(devices)
    logger.info(
        "MirroredStrategy over %d replica(s): %s",
        strategy.num_replicas_in_sync,
        ", ".join(devices),
    )
    return strategy


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Return whether `strategy` is a `MultiWorkerMirroredStrategy`."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Return whether this process writes checkpoints, logs and exports.

    Every single-machine strategy is its own chief. In a multi-worker
    cluster the chief is the `chief` task, or worker 0 when the cluster has
    no `chief` task.

    Example:

    ```python
    if is_chief(strategy):
        model.save("model.keras")
    ```
    """
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def split_cpu(count: int) -> list[str]:
    """Split the CPU into `count` logical devices and return their names.

    Lets a machine without GPUs train on several replicas, to try
    `MirroredStrategy` the way it runs on several GPUs. Call it before any
    other TensorFlow op: the runtime refuses afterwards.

    Args:
        count: Number of logical CPU devices, 1 or more.

    Returns:
        Their names, such as `["/device:CPU:0", "/device:CPU:1"]`.

    Raises:
        StrategyError: The runtime has already started.

    Example:

    ```python
    strategy = build_strategy("mirrored", devices=split_cpu(2))
    ```
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        existing = tf.config.list_logical_devices("CPU")
        if len(existing) != count:
            raise StrategyError(
                f"Cannot split the CPU into {count} devices after TensorFlow started "
                f"({len(existing)} exist); pass --cpu-devices before anything else runs."
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]
