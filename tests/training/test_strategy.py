import json

import pytest

from fnn_keras.training.strategy import (
    StrategyError,
    build_strategy,
    cluster_from_tf_config,
    resolve_strategy_kind,
)

CLUSTER = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


def tf_config(**values):
    return json.dumps(values)


def test_auto_picks_multi_worker_only_with_cluster():
    assert resolve_strategy_kind("auto", None) == "mirrored"
    assert resolve_strategy_kind("auto", "{}") == "mirrored"
    config = tf_config(cluster=CLUSTER, task={"type": "worker", "index": 0})
    assert resolve_strategy_kind("auto", config) == "multi_worker"
    assert resolve_strategy_kind("one_device", config) == "one_device"


def test_cluster_from_tf_config_reads_cluster():
    config = tf_config(cluster=CLUSTER, task={"type": "worker", "index": 1})
    assert cluster_from_tf_config(config) == CLUSTER
    assert cluster_from_tf_config(None) is None


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "set but empty"),
        ("  ", "set but empty"),
        ('{"cluster": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (tf_config(cluster=CLUSTER), '"task" must name a type'),
        (tf_config(cluster=CLUSTER, task={"type": "ps", "index": 0}), '"task" must name a type'),
        (tf_config(cluster=CLUSTER, task={"type": "worker", "index": 5}), "index must be 0 to 1"),
        (tf_config(cluster=CLUSTER, task={"type": "worker"}), "index must be 0 to 1"),
        (
            tf_config(cluster=["127.0.0.1:1"], task={"type": "worker", "index": 0}),
            '"cluster" must map',
        ),
    ],
)
def test_invalid_tf_config_is_rejected(value, message):
    with pytest.raises(StrategyError, match=message):
        build_strategy("auto" if value.strip().startswith("{") else "multi_worker", tf_config=value)


def test_multi_worker_needs_tf_config():
    with pytest.raises(StrategyError, match="needs TF_CONFIG"):
        build_strategy("multi_worker", tf_config=None)
