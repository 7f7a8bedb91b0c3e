"""FGM, gradient clipping and the training losses, on 1 and 2 replicas."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import STEP_LABELS, STEP_TEXTS, tiny_backbone_without_dropout
from fnn_keras.backbones import TINY_CONFIG
from fnn_keras.data.pipeline import build_preprocessor, make_training_dataset
from fnn_keras.models.classifier import build_classifier
from fnn_keras.training.adversarial import fgm_perturbation
from fnn_keras.training.losses import build_loss
from fnn_keras.training.optimization import build_optimizer
from fnn_keras.training.train_model import TrainingModel

TEXTS, LABELS = STEP_TEXTS, STEP_LABELS


def build_model(strategy, optimizer=None, fgm_epsilon=None, clip_norm=None):
    """A tiny classifier without dropout, so every forward pass is the same."""
    with strategy.scope():
        backbone = tiny_backbone_without_dropout(3)
        classifier = build_classifier(
            backbone, num_labels=2, feedback_units=8, feedback_dropout=0.0, dropout=0.0
        )
        model = TrainingModel(
            classifier,
            keras.losses.SparseCategoricalCrossentropy(reduction=None),
            clip_norm=clip_norm,
            adversarial_embedding=None if fgm_epsilon is None else backbone.token_embedding,
            adversarial_epsilon=fgm_epsilon or 1.0,
        )
        model.compile(optimizer or build_optimizer(1e-3, 100, warmup_ratio=0.1))
    return model, backbone


def batches(tiny_bundle, epochs=1, batch_size=4):
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 16)
    data = make_training_dataset(TEXTS, LABELS, preprocessor, batch_size, 0, 0, epochs)
    return data, math.ceil(len(TEXTS) / batch_size)


def test_fgm_perturbation_norm_per_example():
    gradient = tf.random.stateless_normal([3, 4, 5], seed=[1, 2])
    gradient = tf.concat([gradient[:2], tf.zeros([1, 4, 5])], axis=0)
    # A constant factor, such as float16 loss scaling, changes nothing.
    moved = fgm_perturbation(gradient * 1024.0, epsilon=0.5).numpy()
    for index in range(2):
        expected = 0.5 * gradient[index] / tf.norm(gradient[index])
        np.testing.assert_allclose(moved[index], expected, rtol=1e-5, atol=1e-7)
        assert np.linalg.norm(moved[index]) == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_array_equal(moved[2], 0.0)


def test_fgm_follows_embedding_gradient(strategies, tiny_bundle):
    epsilon = 0.01
    model, backbone = build_model(strategies[1], fgm_epsilon=epsilon)
    data, _ = batches(tiny_bundle)
    features, labels = next(iter(data))
    table = backbone.token_embedding.embeddings

    def replica_step():
        terms = model.adversarial_terms(features, labels)
        # The gradient with respect to the embedding output, checked against
        # the embedding table's gradient from a plain pass without the hook:
        # each table row's gradient is the sum over the positions holding it.
        with tf.GradientTape() as tape:
            probabilities = model.classifier(features, training=True)
            loss_sum = tf.reduce_sum(
                keras.losses.sparse_categorical_crossentropy(labels, probabilities)
            )
        table_gradient = tf.convert_to_tensor(tape.gradient(loss_sum, table.value))
        return terms, loss_sum, table_gradient

    terms, loss_sum, table_gradient = strategies[1].run(replica_step)
    hidden = TINY_CONFIG["hidden_dim"]
    per_position = tf.reshape(terms["embedding_gradient"], [-1, hidden])
    token_ids = tf.reshape(features["token_ids"], [-1])
    summed = tf.math.unsorted_segment_sum(per_position, token_ids, table.shape[0])
    np.testing.assert_allclose(summed, table_gradient, rtol=1e-4, atol=1e-7)
    assert terms["loss_sum"].numpy() == pytest.approx(loss_sum.numpy(), rel=1e-6)

    # The perturbation: norm epsilon per example, along that gradient.
    gradient = terms["embedding_gradient"].numpy()
    moved = terms["perturbation"].numpy()
    for index in range(len(gradient)):
        assert np.linalg.norm(moved[index]) == pytest.approx(epsilon, rel=1e-5)
        cosine = np.sum(moved[index] * gradient[index]) / (
            np.linalg.norm(moved[index]) * np.linalg.norm(gradient[index])
        )
        assert cosine == pytest.approx(1.0, abs=1e-5)

    # The adversarial loss is the loss at the moved embeddings: to first
    # order it rises by epsilon times each example's gradient norm, the
    # steepest rise a step of that length can give.
    rise = float(terms["adversarial_loss_sum"] - terms["loss_sum"])
    expected = epsilon * float(np.sum(np.linalg.norm(gradient.reshape(len(gradient), -1), axis=1)))
    assert expected > 0
    assert rise == pytest.approx(expected, rel=0.05)


def test_fgm_one_and_two_replicas_agree(strategies, tiny_bundle):
    weights = {}
    for count in (1, 2):
        model, _ = build_model(strategies[count], fgm_epsilon=0.5)
        data, steps = batches(tiny_bundle, epochs=2)
        history = model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0, shuffle=False)
        # The logged adversarial loss is above the clean loss.
        assert history.history["adversarial_loss"][0] > history.history["loss"][0]
        weights[count] = model.classifier.get_weights()
    for on_one, on_two in zip(weights[1], weights[2], strict=True):
        np.testing.assert_allclose(on_one, on_two, atol=1e-5)

    # FGM changed the training: plain steps end elsewhere.
    plain, _ = build_model(strategies[1])
    data, steps = batches(tiny_bundle, epochs=2)
    plain.fit(data, epochs=2, steps_per_epoch=steps, verbose=0, shuffle=False)
    difference = max(
        np.max(np.abs(a - b))
        for a, b in zip(plain.classifier.get_weights(), weights[1], strict=True)
    )
    assert difference > 1e-4


@pytest.mark.parametrize("count", [1, 2], ids=["one_replica", "two_replicas"])
def test_clip_norm_bounds_update(strategies, tiny_bundle, count):
    # Plain SGD with learning rate 1 moves the weights by the gradient
    # itself, so the step's global norm is the clipped gradient's norm.
    clip = 1e-3
    model, _ = build_model(
        strategies[count], optimizer=keras.optimizers.SGD(learning_rate=1.0), clip_norm=clip
    )
    before = [np.array(w) for w in model.classifier.trainable_weights]
    data, _ = batches(tiny_bundle)
    history = model.fit(data.take(1), epochs=1, verbose=0, shuffle=False)
    after = [np.array(w) for w in model.classifier.trainable_weights]
    step = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(after, before, strict=True)))
    assert history.history["loss"][0] > 0
    assert step == pytest.approx(clip, rel=1e-4)


def test_smoothed_and_focal_losses():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], np.float32)
    labels = np.array([0, 1])

    smoothing = 0.1
    targets = np.eye(3)[labels] * (1 - smoothing) + smoothing / 3
    expected = -np.sum(targets * np.log(probabilities), axis=1)
    smoothed = build_loss("cross_entropy", 3, label_smoothing=smoothing)
    np.testing.assert_allclose(smoothed(labels, probabilities), expected, rtol=1e-5)

    gamma = 2.0
    true = probabilities[np.arange(2), labels]
    expected = -((1 - true) ** gamma) * np.log(true)
    focal = build_loss("focal", 3, focal_gamma=gamma)
    np.testing.assert_allclose(focal(labels, probabilities), expected, rtol=1e-5)

    plain = build_loss("cross_entropy", 3)
    np.testing.assert_allclose(plain(labels, probabilities), -np.log(true), rtol=1e-6)
    # Focal loss weighs the confident, right first example down more.
    ratio = focal(labels, probabilities) / plain(labels, probabilities)
    assert ratio[0] < ratio[1]
