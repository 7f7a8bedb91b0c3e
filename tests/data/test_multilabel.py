"""Multi-label targets, per-label thresholds and metrics, against hand calculations."""

import json

import numpy as np
import pytest

from conftest import write_tsv
from fnn_keras.data.labels import LabelError, LabelVocabulary
from fnn_keras.data.multilabel import (
    load_label_thresholds,
    multi_hot,
    save_label_thresholds,
    split_label_sets,
    tune_label_thresholds,
)
from fnn_keras.data.readers import read_examples
from fnn_keras.data.thresholds import ThresholdError
from fnn_keras.evaluation.multilabel import format_multilabel_report, multilabel_metrics

LABELS = ["a", "b", "c"]
# Four texts with label sets {a, b}, {b}, {a, c} and {c}.
ROWS = [("first text", "a,b"), ("second text", "b"), ("third text", "c, a"), ("fourth", "c")]
PROBABILITIES = np.array(
    [
        [0.9, 0.4, 0.2],
        [0.6, 0.7, 0.1],
        [0.3, 0.2, 0.8],
        [0.1, 0.55, 0.45],
    ],
    np.float32,
)


@pytest.fixture
def targets(tmp_path):
    examples = read_examples(write_tsv(tmp_path / "multi.tsv", ROWS), "text", "label")
    sets = split_label_sets(examples.labels, ",", examples.path)
    assert sets == [["a", "b"], ["b"], ["c", "a"], ["c"]]
    return multi_hot(sets, LabelVocabulary(LABELS))


def test_multi_hot_rows(targets):
    assert targets.dtype == np.float32
    np.testing.assert_array_equal(targets, [[1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]])


def test_metrics_at_default_thresholds_match_hand_calculation(targets):
    metrics = multilabel_metrics(PROBABILITIES, targets, LABELS, [0.5, 0.5, 0.5])
    # Predicted at 0.5: {a}, {a, b}, {c}, {b}.
    # a: TP 1 (text 1), FP 1 (text 2), FN 1 (text 3) -> P 1/2, R 1/2, F1 1/2.
    # b: TP 1 (text 2), FP 1 (text 4), FN 1 (text 1) -> P 1/2, R 1/2, F1 1/2.
    # c: TP 1 (text 3), FP 0, FN 1 (text 4) -> P 1, R 1/2, F1 2/3.
    per_label = metrics["per_label"]
    assert [per_label[label]["f1"] for label in LABELS] == pytest.approx([1 / 2, 1 / 2, 2 / 3])
    assert per_label["c"]["precision"] == pytest.approx(1.0)
    assert per_label["c"]["recall"] == pytest.approx(1 / 2)
    # Micro: TP 3, FP 2, FN 3 -> P 3/5, R 3/6, F1 2*3 / (2*3 + 2 + 3) = 6/11.
    assert metrics["micro_precision"] == pytest.approx(3 / 5)
    assert metrics["micro_recall"] == pytest.approx(1 / 2)
    assert metrics["micro_f1"] == pytest.approx(6 / 11)
    # Macro: (1/2 + 1/2 + 2/3) / 3 = 5/9.
    assert metrics["macro_f1"] == pytest.approx(5 / 9)
    # No label set is exactly right; 5 of 12 label decisions are wrong.
    assert metrics["accuracy"] == 0
    assert metrics["hamming_loss"] == pytest.approx(5 / 12)
    # Mean binary cross-entropy over all 12 decisions.
    y, p = targets.astype(np.float64), PROBABILITIES.astype(np.float64)
    by_hand = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert metrics["loss"] == pytest.approx(by_hand, rel=1e-6)


def test_tuned_thresholds_match_hand_calculation(targets):
    tuned = tune_label_thresholds(PROBABILITIES, targets)
    # a, scores high to low: .9 (yes) .6 (no) .3 (yes) .1 (no). Taking the
    # top 3 gives TP 2, FP 1, FN 0: F1 4/5, the best cut; the threshold is
    # the midpoint of .3 and .1.
    # b: .7 (yes) .55 (no) .4 (yes) .2 (no): again the top 3, F1 4/5, (.4 + .2) / 2.
    # c: .8 (yes) .45 (yes) .2 (no) .1 (no): the top 2, F1 1, (.45 + .2) / 2.
    assert [row["threshold"] for row in tuned] == pytest.approx([0.2, 0.3, 0.325], rel=1e-6)
    assert [row["f1"] for row in tuned] == pytest.approx([4 / 5, 4 / 5, 1.0])
    assert [row["default_f1"] for row in tuned] == pytest.approx([1 / 2, 1 / 2, 2 / 3])

    metrics = multilabel_metrics(PROBABILITIES, targets, LABELS, [r["threshold"] for r in tuned])
    # Predicted: {a, b}, {a, b}, {a, c}, {b, c}: TP 6, FP 2, FN 0 -> F1 12/14.
    assert metrics["micro_f1"] == pytest.approx(6 / 7)
    assert metrics["accuracy"] == pytest.approx(2 / 4)


def test_tuning_ties_pick_the_cut_nearest_half():
    # First label, scores .9 (yes) .8 (no) .7 (no) .6 (yes). F1 is
    # 2TP / (2TP + FP + FN): the top 1 gives 2/3 and all 4 give 4/6, the best
    # two cuts (the top 2 give 2/4, the top 3 2/5). Their thresholds are
    # (.9 + .8) / 2 = .85 and 0; .85 is nearer 0.5. The second label has no
    # positives and keeps 0.5.
    probabilities = np.array([[0.9, 0.3], [0.8, 0.7], [0.7, 0.2], [0.6, 0.1]])
    tuned = tune_label_thresholds(probabilities, np.array([[1, 0], [0, 0], [0, 0], [1, 0]]))
    assert tuned[0]["threshold"] == pytest.approx(0.85, rel=1e-6)
    assert tuned[0]["f1"] == pytest.approx(2 / 3)
    assert tuned[1] == {"threshold": 0.5, "f1": 0.0, "default_f1": 0.0}


def test_tuning_rejects_mismatched_shapes():
    with pytest.raises(ThresholdError, match="same"):
        tune_label_thresholds(np.zeros((2, 3)), np.zeros((2, 2)))


def test_split_label_sets_counts_what_it_leaves_out(caplog):
    sets = split_label_sets(["a||b", "b|b", " c "], "|", "train.tsv")
    assert sets == [["a", "b"], ["b"], ["c"]]
    assert "left out 1 empty label(s) between separators and 1 label(s) repeated" in caplog.text


def test_split_label_sets_rejects_a_field_without_labels():
    with pytest.raises(LabelError, match=r"train\.tsv: example 2: label field ' , '"):
        split_label_sets(["a", " , "], ",", "train.tsv")
    with pytest.raises(LabelError, match=r"train\.tsv:7: label field ' , '"):
        split_label_sets(["a", " , "], ",", "train.tsv", lines=[3, 7])


def test_label_thresholds_file_round_trip(tmp_path):
    save_label_thresholds(str(tmp_path), LABELS, [0.2, 0.3, 0.325], "dev.tsv")
    assert load_label_thresholds(str(tmp_path), LABELS) == pytest.approx([0.2, 0.3, 0.325])
    assert load_label_thresholds(str(tmp_path / "missing"), LABELS) is None
    with pytest.raises(ThresholdError, match="no threshold for 'd'"):
        load_label_thresholds(str(tmp_path), ["a", "b", "c", "d"])
    with pytest.raises(ThresholdError, match="names label"):
        load_label_thresholds(str(tmp_path), ["a", "b"])
    path = tmp_path / "label_thresholds.json"
    path.write_text(json.dumps({"thresholds": {"a": 2, "b": 0.5, "c": 0.5}}), encoding="utf-8")
    with pytest.raises(ThresholdError, match="threshold 2.0 is not between 0 and 1"):
        load_label_thresholds(str(tmp_path), LABELS)


def test_report_lists_every_label(targets):
    metrics = multilabel_metrics(PROBABILITIES, targets, LABELS, [0.5] * 3, "dev.tsv")
    report = format_multilabel_report(metrics, "Dev")
    assert "- micro-F1: 0.5455" in report
    assert "| c | 0.5000 | 1.0000 | 0.5000 | 0.6667 | 2 | 1 |" in report
