import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_python
from fnn_keras.data.pipeline import build_preprocessor, trim_batch
from fnn_keras.models.classifier import build_classifier

TEXTS = ["a good film", "i hate this phone , it is the worst", "很好"]


def features(bundle, texts, sequence_length):
    preprocessor = build_preprocessor(bundle.tokenizer, sequence_length)
    raw = preprocessor(tf.constant(texts))
    return {k: tf.cast(v, tf.int32) for k, v in raw.items()}


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    keras.utils.set_random_seed(2)
    return build_classifier(tiny_bundle.backbone, num_labels=3, feedback_units=6)


def test_classifier_outputs_probabilities(classifier, tiny_bundle):
    probabilities = np.asarray(classifier(features(tiny_bundle, TEXTS, 16)))
    assert probabilities.shape == (3, 3)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "bidirectional, pooling",
    [(False, "last"), (True, "last"), (True, "mean")],
    ids=["forward_last", "bidirectional_last", "bidirectional_mean"],
)
def test_classifier_ignores_padding_length(tiny_bundle, bidirectional, pooling):
    keras.utils.set_random_seed(4)
    model = build_classifier(
        tiny_bundle.backbone, num_labels=2, bidirectional=bidirectional, pooling=pooling
    )
    short = model(features(tiny_bundle, TEXTS, 16))
    long = model(features(tiny_bundle, TEXTS, 64))
    np.testing.assert_allclose(long, short, atol=1e-6)

    # Each text alone and unpadded gives the same probabilities.
    trimmed = trim_batch(features(tiny_bundle, TEXTS[1:2], 64))
    assert int(tf.reduce_min(trimmed["padding_mask"])) == 1
    np.testing.assert_allclose(model(trimmed)[0], short[1], atol=1e-6)


def test_classifier_ignores_embeddings_at_padding(classifier, tiny_bundle):
    # Feed the backbone output with garbage at padded positions straight to
    # the feedback layer, as the model does after the backbone.
    inputs = features(tiny_bundle, TEXTS, 32)
    sequence = tiny_bundle.backbone(inputs)["sequence_output"]
    mask = inputs["padding_mask"]
    noisy = tf.where(tf.cast(mask, bool)[..., None], sequence, 50.0)
    feedback = classifier.get_layer("bidirectional_feedback")
    np.testing.assert_allclose(feedback(noisy, mask=mask), feedback(sequence, mask=mask), atol=1e-6)


def test_classifier_reloads_in_fresh_process(classifier, tiny_bundle, tmp_path):
    inputs = features(tiny_bundle, TEXTS, 16)
    path = str(tmp_path / "model.keras")
    classifier.save(path)
    np.savez(tmp_path / "inputs.npz", **{k: v.numpy() for k, v in inputs.items()})
    script = (
        "import sys, numpy as np, fnn_keras, keras\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "inputs = dict(np.load(sys.argv[2]))\n"
        "np.save(sys.argv[3], np.asarray(model.predict(inputs, verbose=0)))\n"
        "np.savez(sys.argv[4], *model.get_weights())\n"
    )
    result = run_python(
        [
            "-c",
            script,
            path,
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "out.npy"),
            str(tmp_path / "weights.npz"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), classifier.predict(inputs, verbose=0), atol=1e-6
    )
    weights = np.load(tmp_path / "weights.npz")
    reloaded = [weights[f"arr_{i}"] for i in range(len(weights.files))]
    assert len(reloaded) == len(classifier.get_weights())
    for got, expected in zip(reloaded, classifier.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert os.path.getsize(path) > 0


def test_classifier_rejects_one_label(tiny_bundle):
    with pytest.raises(ValueError, match="num_labels=1"):
        build_classifier(tiny_bundle.backbone, num_labels=1)


def test_classifier_rejects_unknown_pooling(tiny_bundle):
    with pytest.raises(ValueError, match="pooling='max'"):
        build_classifier(tiny_bundle.backbone, num_labels=2, pooling="max")
