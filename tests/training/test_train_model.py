"""`TrainingModel` on 1 and 2 replicas: same weights, exact losses, order kept."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import STEP_LABELS, STEP_TEXTS, tiny_backbone_without_dropout
from fnn_keras.data.pipeline import (
    bucketed_batches,
    build_preprocessor,
    epoch_order,
    make_dataset,
    make_training_dataset,
    trim_batch,
)
from fnn_keras.data.summary import token_lengths
from fnn_keras.models.classifier import INPUT_NAMES, build_classifier
from fnn_keras.training.optimization import build_optimizer
from fnn_keras.training.precision import float32_copy, resolve_mixed_precision
from fnn_keras.training.train_model import TrainingModel

TEXTS, LABELS = STEP_TEXTS, STEP_LABELS


def build_model(strategy, feedback_steps=2, learning_rate=1e-3, total_steps=100):
    """A tiny classifier without dropout, so replicas draw no random masks."""
    with strategy.scope():
        backbone = tiny_backbone_without_dropout(3)
        classifier = build_classifier(
            backbone,
            num_labels=2,
            feedback_units=8,
            feedback_steps=feedback_steps,
            feedback_dropout=0.0,
            dropout=0.0,
        )
        model = TrainingModel(
            classifier, keras.losses.SparseCategoricalCrossentropy(reduction=None)
        )
        model.compile(
            build_optimizer(learning_rate, total_steps, warmup_ratio=0.1),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return model


def training_data(tiny_bundle, epochs, batch_size=4):
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 16)
    data = make_training_dataset(TEXTS, LABELS, preprocessor, batch_size, 0, 0, epochs)
    return data, math.ceil(len(TEXTS) / batch_size)


def test_two_replicas_match_one_replica(strategies, tiny_bundle):
    # 9 examples in batches of 4: the last batch has 1 example, so one of
    # the two replicas gets none.
    weights = {}
    for count in (1, 2):
        model = build_model(strategies[count])
        data, steps = training_data(tiny_bundle, epochs=3)
        model.fit(data, epochs=3, steps_per_epoch=steps, verbose=0, shuffle=False)
        weights[count] = model.classifier.get_weights()
    assert len(weights[1]) == len(weights[2])
    for one, two in zip(weights[1], weights[2], strict=True):
        np.testing.assert_allclose(one, two, atol=1e-5)
    # Training moved the weights: the comparison is not of two fresh models.
    fresh = build_model(strategies[1]).classifier.get_weights()
    assert max(np.max(np.abs(a - b)) for a, b in zip(fresh, weights[1], strict=True)) > 1e-3


def test_two_replica_evaluate_and_predict_exact(strategies, tiny_bundle):
    model = build_model(strategies[2])
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 16)
    data = make_dataset(TEXTS, LABELS, preprocessor, batch_size=4)
    loss = model.evaluate(data, verbose=0, return_dict=True)["loss"]

    probabilities = model.predict(make_dataset(TEXTS, None, preprocessor, 4), verbose=0)
    assert probabilities.shape == (len(TEXTS), 2)
    expected = -np.mean(np.log(probabilities[np.arange(len(TEXTS)), LABELS]))
    assert loss == pytest.approx(expected, rel=1e-5)

    # Input order: each row matches the same text run alone, off the strategy.
    single = float32_copy(model.classifier)
    for index in (0, len(TEXTS) - 1):
        alone = single.predict(make_dataset([TEXTS[index]], None, preprocessor, 1), verbose=0)
        np.testing.assert_allclose(alone[0], probabilities[index], atol=1e-5)


class LossRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def test_150_steps_on_two_replicas_stay_finite(strategies, tiny_bundle):
    epochs = 50  # 3 steps per epoch: 150 steps.
    final = {}
    for count in (1, 2):
        model = build_model(strategies[count], feedback_steps=3, total_steps=150)
        data, steps = training_data(tiny_bundle, epochs=epochs)
        recorder = LossRecorder()
        history = model.fit(
            data,
            epochs=epochs,
            steps_per_epoch=steps,
            verbose=0,
            shuffle=False,
            callbacks=[recorder],
        )
        assert len(recorder.losses) == 150
        assert all(math.isfinite(loss) for loss in recorder.losses)
        final[count] = history.history["loss"][-1]
    # The loss must have fallen, or matching runs would prove little.
    assert final[1] < 0.5
    assert final[2] == pytest.approx(final[1], rel=0.02)


def test_identity_model_mse_is_exactly_one(strategies):
    with strategies[2].scope():
        inputs = keras.Input((3,))
        model = TrainingModel(
            keras.Model(inputs, inputs), keras.losses.MeanSquaredError(reduction=None)
        )
        model.compile(keras.optimizers.AdamW(1e-3))
    # 5 rows in batches of 4: the last batch leaves one replica empty.
    data = tf.data.Dataset.from_tensor_slices((np.ones((5, 3)), np.zeros((5, 3)))).batch(4)
    with pytest.warns(UserWarning, match="no trainable weights"):
        history = model.fit(data, epochs=2, verbose=0)
    assert history.history["loss"] == [1.0, 1.0]
    assert model.evaluate(data, verbose=0) == 1.0


def test_loss_needs_per_example_reduction():
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="reduction=None"):
        TrainingModel(keras.Model(inputs, inputs), keras.losses.MeanSquaredError())


def test_bucketed_batches_cover_each_example_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    for epoch in range(3):
        batches = bucketed_batches(lengths, 32, seed=5, epoch=epoch, pool_batches=4)
        assert len(batches) == math.ceil(1000 / 32)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert sorted(len(batch) for batch in batches)[1:] == [32] * (len(batches) - 1)

    def padded_tokens(batches):
        return sum(int(lengths[batch].max()) * len(batch) for batch in batches)

    plain = padded_tokens([epoch_order(1000, 5, 0)[i : i + 32] for i in range(0, 1000, 32)])
    # Lengths spread evenly over 3..59: sorted pools of 128 texts cut the
    # padded token count to 0.67 of plain batching, one pool of all to 0.57.
    assert padded_tokens(bucketed_batches(lengths, 32, 5, 0, pool_batches=4)) < 0.7 * plain
    assert padded_tokens(bucketed_batches(lengths, 32, 5, 0)) < 0.6 * plain


def test_bucketing_keeps_per_example_losses(strategies, tiny_bundle):
    model = build_model(strategies[1])
    texts = TEXTS * 3 + ["a much longer text than the others in this small set of texts"]
    labels = np.array(LABELS * 3 + [1])
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 24)
    lengths = token_lengths(tiny_bundle.tokenizer, texts)
    # The "labels" fed through the pipeline are row numbers, to find the
    # same rows padded to the full sequence length.
    rows = list(range(len(texts)))
    data = make_training_dataset(texts, rows, preprocessor, 4, 0, 0, 1, lengths=lengths)
    padded = preprocessor(tf.constant(texts))
    loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    seen = []
    for features, batch_rows in data:
        batch_rows = batch_rows.numpy()
        seen.extend(batch_rows.tolist())
        assert features["token_ids"].shape[1] == min(max(lengths[batch_rows]), 24)
        fixed = {name: tf.gather(padded[name], batch_rows) for name in INPUT_NAMES}
        trimmed_losses = loss(labels[batch_rows], model.classifier(features))
        fixed_losses = loss(labels[batch_rows], model.classifier(fixed))
        np.testing.assert_allclose(trimmed_losses, fixed_losses, atol=1e-5)
    assert sorted(seen) == rows


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ([], "off"),
        ([(8, 0)], "bfloat16"),
        ([(9, 0), (8, 6)], "bfloat16"),
        ([(8, 0), (7, 5)], "float16"),
        ([(7, 0)], "float16"),
        ([(6, 1)], "off"),
    ],
)
def test_mixed_precision_auto_by_gpu(capabilities, expected):
    assert resolve_mixed_precision("auto", gpu_capabilities=capabilities) == expected
    assert resolve_mixed_precision("float16", gpu_capabilities=capabilities) == "float16"


def test_mixed_precision_auto_is_off_on_this_cpu():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert resolve_mixed_precision("auto") == "off"


def test_pad_to_multiple_rounds_batch_length(tiny_bundle):
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 24)
    features = preprocessor(tf.constant(["good", "a good film"]))
    longest = int(tf.reduce_max(tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), 1)))
    assert trim_batch(features)["token_ids"].shape[1] == longest
    assert trim_batch(features, pad_to_multiple=16)["token_ids"].shape[1] == 16
    # Never past the preprocessor's sequence length.
    assert trim_batch(features, pad_to_multiple=32)["token_ids"].shape[1] == 24


class StepLogs(keras.callbacks.Callback):
    """Keep one value of each step's logs."""

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs[self.name]))


def test_gradient_norm_is_global_on_any_replica_count(strategies, tiny_bundle):
    norms = {}
    for count in (1, 2):
        model = build_model(strategies[count])
        data, steps = training_data(tiny_bundle, epochs=1)
        if count == 1:
            # The first step's gradient, by hand: the mean loss over the whole batch.
            features, labels = next(iter(data))
            with tf.GradientTape() as tape:
                probabilities = model.classifier(features, training=True)
                loss = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(labels, probabilities)
                )
            gradients = tape.gradient(loss, model.trainable_variables)
            # Dense, so repeated token ids in the embedding gradient add up first.
            dense = [tf.convert_to_tensor(g) for g in gradients if g is not None]
            expected = float(tf.linalg.global_norm(dense))
        recorder = StepLogs("gradient_norm")
        model.fit(
            data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[recorder]
        )
        norms[count] = recorder.values
    assert norms[1][0] == pytest.approx(expected, rel=1e-5)
    # With 2 replicas the norm is of the summed gradient, not of one replica's share.
    np.testing.assert_allclose(norms[2], norms[1], rtol=1e-5)
