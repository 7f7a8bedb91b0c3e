import keras
import numpy as np
import pytest

from fnn_keras.training.optimization import (
    ScaledAdamW,
    WarmupLinearDecay,
    build_optimizer,
)


def test_schedule_warms_up_then_decays():
    schedule = WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 120)]
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)


def test_schedule_without_warmup_starts_at_peak():
    schedule = WarmupLinearDecay(2e-5, total_steps=4, warmup_steps=0)
    np.testing.assert_allclose(float(schedule(0)), 2e-5, rtol=1e-6)


def test_schedule_rejects_bad_steps():
    with pytest.raises(ValueError, match="warmup_steps=20"):
        WarmupLinearDecay(1e-3, total_steps=10, warmup_steps=20)


def test_optimizer_excludes_biases_from_decay():
    optimizer = build_optimizer(1e-3, total_steps=10, weight_decay=0.5)
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert optimizer._use_weight_decay(dense.kernel)
    assert not optimizer._use_weight_decay(dense.bias)


def two_layer_model():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2, kernel_initializer="ones", name="body"),
            keras.layers.Dense(1, kernel_initializer="ones", name="head"),
        ]
    )
    return model


@pytest.mark.parametrize("replicas", [1, 2], ids=["one_replica", "two_replicas"])
def test_scaled_adamw_multiplies_head_rate(replicas, strategies):
    strategy = strategies[replicas]
    with strategy.scope():
        model = two_layer_model()
        head_prefix = model.get_layer("head").kernel.path.rsplit("/", 1)[0] + "/"
        optimizer = ScaledAdamW({head_prefix: 10.0}, learning_rate=1e-3, weight_decay=0.0)
        model.compile(optimizer, "mse")
    body_before = model.get_layer("body").kernel.numpy().copy()
    head_before = model.get_layer("head").kernel.numpy().copy()
    model.fit(np.ones((4, 3)), np.zeros((4, 1)), batch_size=4, epochs=1, verbose=0)
    # Adam's first step moves every weight by about its learning rate.
    body_step = np.abs(model.get_layer("body").kernel.numpy() - body_before)
    head_step = np.abs(model.get_layer("head").kernel.numpy() - head_before)
    np.testing.assert_allclose(body_step, 1e-3, rtol=1e-3)
    np.testing.assert_allclose(head_step, 1e-2, rtol=1e-3)


def test_scaled_adamw_config_round_trip():
    optimizer = ScaledAdamW({"head/": 4.0}, learning_rate=1e-3)
    restored = ScaledAdamW.from_config(optimizer.get_config())
    assert restored.learning_rate_multipliers == {"head/": 4.0}


def test_learning_rate_multipliers_for_head_and_layers(tiny_bundle):
    from fnn_keras.models.classifier import build_classifier
    from fnn_keras.training.optimization import learning_rate_multipliers

    model = build_classifier(tiny_bundle.backbone, num_labels=2)
    multipliers = learning_rate_multipliers(model, tiny_bundle.backbone, 5.0, 0.5)
    assert multipliers["bidirectional_feedback/"] == 5.0
    assert multipliers["probabilities/"] == 5.0
    assert multipliers["transformer_layer_1/"] == 1.0
    assert multipliers["transformer_layer_0/"] == 0.5
    assert multipliers["token_embedding/"] == 0.25
    assert "pooled_dense/" not in multipliers
    covered = [
        v.path for v in model.trainable_variables if any(v.path.startswith(p) for p in multipliers)
    ]
    assert len(covered) == len(model.trainable_variables)

    no_decay = learning_rate_multipliers(model, tiny_bundle.backbone, 1.0, 1.0)
    assert set(no_decay) == {"bidirectional_feedback/", "probabilities/"}
