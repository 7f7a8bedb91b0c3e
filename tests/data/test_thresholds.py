"""Tuning, saving and applying the binary decision threshold."""

import json

import numpy as np
import pytest

from fnn_keras.data.thresholds import (
    ThresholdError,
    load_threshold,
    predicted_ids,
    save_thresholds,
    tune_binary_threshold,
)
from fnn_keras.evaluation.metrics import classification_metrics


def as_probabilities(scores):
    scores = np.asarray(scores, dtype=np.float32)
    return np.stack([1 - scores, scores], axis=1)


def macro_f1(probabilities, label_ids, threshold):
    predicted = predicted_ids(probabilities, threshold)
    return classification_metrics(label_ids, predicted, ["neg", "pos"])["macro_f1"]


def test_tuned_threshold_beats_every_other_cut():
    rng = np.random.default_rng(0)
    label_ids = rng.integers(0, 2, 300)
    # Positives score a little higher; the best cut is well below 0.5.
    scores = np.clip(0.15 * label_ids + rng.random(300) * 0.5, 0, 1)
    probabilities = as_probabilities(scores)
    tuned = tune_binary_threshold(probabilities, label_ids)

    assert macro_f1(probabilities, label_ids, tuned["threshold"]) == pytest.approx(
        tuned["macro_f1"], abs=1e-12
    )
    grid = np.unique(probabilities[:, 1])
    best_on_grid = max(macro_f1(probabilities, label_ids, t) for t in grid)
    assert tuned["macro_f1"] >= best_on_grid - 1e-12
    assert tuned["argmax_macro_f1"] == pytest.approx(macro_f1(probabilities, label_ids, None))
    assert tuned["macro_f1"] > tuned["argmax_macro_f1"]


def test_threshold_lies_between_scores():
    probabilities = as_probabilities([0.9, 0.45, 0.40, 0.1])
    tuned = tune_binary_threshold(probabilities, np.array([1, 1, 0, 0]))
    assert 0.40 < tuned["threshold"] <= 0.45
    assert tuned["macro_f1"] == 1.0
    # The threshold is a float32, so a float32 runtime draws the same line.
    assert float(np.float32(tuned["threshold"])) == tuned["threshold"]


def test_flat_optimum_stays_near_half():
    # Every cut scores the same, so the one nearest 0.5 is kept.
    probabilities = as_probabilities([0.5, 0.5])
    tuned = tune_binary_threshold(probabilities, np.array([0, 1]))
    assert tuned["threshold"] == pytest.approx(0.5, abs=1e-6)


def test_threshold_rule():
    probabilities = as_probabilities([0.2, 0.3, 0.7])
    np.testing.assert_array_equal(predicted_ids(probabilities, 0.3), [0, 1, 1])
    np.testing.assert_array_equal(predicted_ids(probabilities), [0, 0, 1])


@pytest.mark.parametrize(
    "probabilities",
    [np.full((2, 3), 1 / 3), np.zeros((0, 2))],
    ids=["three_labels", "no_examples"],
)
def test_tuning_rejects(probabilities):
    with pytest.raises(ThresholdError):
        tune_binary_threshold(probabilities, np.zeros(len(probabilities), np.int64))


def test_threshold_needs_binary_probabilities():
    with pytest.raises(ThresholdError, match="binary"):
        predicted_ids(np.full((1, 3), 1 / 3), 0.5)


def test_saved_threshold_round_trip(tmp_path):
    tuned = {"threshold": 0.25, "macro_f1": 0.9, "argmax_macro_f1": 0.8}
    save_thresholds(str(tmp_path), "pos", tuned, "dev.tsv")
    assert load_threshold(str(tmp_path), ["neg", "pos"]) == 0.25
    assert load_threshold(str(tmp_path / "elsewhere"), ["neg", "pos"]) is None


def test_saved_threshold_for_other_label_rejected(tmp_path):
    save_thresholds(str(tmp_path), "neg", {"threshold": 0.25}, "dev.tsv")
    with pytest.raises(ThresholdError, match="second label"):
        load_threshold(str(tmp_path), ["neg", "pos"])


def test_unreadable_threshold_file_rejected(tmp_path):
    (tmp_path / "thresholds.json").write_text("{not json")
    with pytest.raises(ThresholdError, match="unreadable"):
        load_threshold(str(tmp_path), ["neg", "pos"])


@pytest.mark.parametrize(
    "content, message",
    [
        ({"label": "pos", "threshold": 1.5}, "not a probability"),
        ({"label": "pos", "threshold": float("nan")}, "not a probability"),
        ({"label": "pos"}, "missing key 'threshold'"),
    ],
    ids=["above_one", "nan", "missing_key"],
)
def test_invalid_threshold_rejected(tmp_path, content, message):
    (tmp_path / "thresholds.json").write_text(json.dumps(content))
    with pytest.raises(ThresholdError, match=message):
        load_threshold(str(tmp_path), ["neg", "pos"])


def test_tuning_needs_both_labels():
    with pytest.raises(ThresholdError, match="both labels"):
        tune_binary_threshold(as_probabilities([0.2, 0.9]), np.array([1, 1]))
