"""A multi-label run end to end: training on 2 replicas, exports, predict and evaluate."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

from conftest import assert_one_line_error, write_tsv
from fnn_keras import evaluate as evaluate_cli
from fnn_keras import predict as predict_cli
from fnn_keras import train as train_cli
from fnn_keras.config import config_from_dict
from fnn_keras.data.multilabel import predicted_label_mask
from fnn_keras.evaluation.multilabel import multilabel_metrics
from fnn_keras.export.exporter import export_run
from fnn_keras.export.predictors import load_predictor
from fnn_keras.export.trained_run import load_trained_run
from fnn_keras.training import trainer

TRAIN = [
    ("the team won the match", "sports"),
    ("a goal in the last minute", "sports"),
    ("the bank raised its prices", "money"),
    ("stocks fell and the market lost money", "money"),
    ("rain and wind all day", "weather"),
    ("a cold and snowy week", "weather"),
    ("rain stopped the match", "sports|weather"),
    ("the club paid a record price for the player", "sports|money"),
    ("the storm cost the farms money", "weather|money"),
    ("sunny skies for the final game", "sports|weather"),
    ("足球比赛", "sports"),
    ("银行利率", "money"),
    ("明天下雨", "weather"),
    ("下雨 比赛 取消", "sports|weather"),
]
DEV = [
    ("the match was won", "sports"),
    ("money in the bank", "money"),
    ("wind and rain", "weather"),
    ("rain at the game", "sports|weather"),
    ("足球 银行", "sports|money"),
]


@pytest.fixture(scope="module")
def multilabel_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel_data")
    return write_tsv(root / "train.tsv", TRAIN), write_tsv(root / "dev.tsv", DEV)


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory, multilabel_data, strategies):
    root = tmp_path_factory.mktemp("multilabel_run")
    train, dev = multilabel_data
    config = config_from_dict(
        {
            "data": {
                "task": "multilabel",
                "train": train,
                "dev": dev,
                "label_delimiter": "|",
            },
            "model": {"backbone": "tiny", "feedback_units": 8},
            "training": {
                "epochs": 3,
                "batch_size": 4,
                "learning_rate": 1e-3,
                "tune_thresholds": True,
            },
            "output": {
                "run_name": "multi",
                "export": False,
                "log_dir": str(root / "logs"),
                "export_dir": str(root / "exported"),
            },
        }
    )
    result = trainer.train(config, strategy=strategies[2], verbose=0)
    # The float32 TFLite variant only, to keep the test short.
    run = load_trained_run("multi", str(root / "exported"))
    texts = [text for text, _ in DEV]
    result.export_report = export_run(run, texts, tflite_variants=("float32",))
    return root, result


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def targets_of(rows, labels):
    return np.array([[label in row[1].split("|") for label in labels] for row in rows], np.float32)


def test_metrics_follow_the_saved_thresholds(multilabel_run):
    root, result = multilabel_run
    run_dir = root / "exported" / "multi"
    labels = read_json(run_dir / "labels.json")
    assert labels == ["money", "sports", "weather"]
    saved = read_json(run_dir / "label_thresholds.json")
    assert saved["tuned_on"].endswith("dev.tsv")
    thresholds = [saved["thresholds"][label] for label in labels]

    # The saved model's dev probabilities, scored independently of the run.
    predictor = load_predictor(str(run_dir))
    probabilities = predictor.predict([text for text, _ in DEV])
    expected = multilabel_metrics(probabilities, targets_of(DEV, labels), labels, thresholds)
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["task"] == "multilabel"
    assert metrics["examples"] == len(DEV)
    for name in ("micro_f1", "macro_f1", "accuracy", "hamming_loss"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-9), name
    assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert result.metrics["micro_f1"] == metrics["micro_f1"]
    # Sigmoid outputs: the rows need not sum to 1.
    assert not np.allclose(probabilities.sum(axis=1), 1.0)

    summary = read_json(run_dir / "data_summary.json")
    assert summary["train"]["examples_per_label"] == {"money": 5, "sports": 7, "weather": 7}


def test_dev_f1_logged_each_epoch(multilabel_run):
    from conftest import scalar_steps, scalar_values

    root, _ = multilabel_run
    validation = os.path.join(root, "logs", "multi", "validation")
    steps = scalar_steps(validation)
    assert steps["epoch_micro_f1"] == [0, 1, 2]
    assert steps["epoch_micro_precision"] == [0, 1, 2]
    assert set(scalar_values(validation, "class_f1/weather")) == {0, 1, 2}


def test_exports_return_label_sets(multilabel_run):
    root, result = multilabel_run
    report = result.export_report
    assert report["failed"] == []
    run_dir = root / "exported" / "multi"
    for artifact in report["artifacts"]:
        if "not_shipped" in artifact:
            continue
        assert artifact["parity"]["max_abs_diff"] <= 1e-4, artifact["variant"]
        assert artifact["parity"]["label_set_agreement"] == 1.0, artifact["variant"]
    serving = next(a for a in report["artifacts"] if a.get("variant") == "serving_default")
    assert serving["labels_follow_decision_rule"] is True
    assert {o["name"] for o in serving["outputs"]} >= {"probabilities", "label_mask", "labels"}

    labels = read_json(run_dir / "labels.json")
    thresholds = read_json(run_dir / "label_thresholds.json")["thresholds"]
    version = str(run_dir / "1")
    served = tf.saved_model.load(version).signatures["serving_default"](
        text=tf.constant([text for text, _ in DEV])
    )
    mask = predicted_label_mask(
        served["probabilities"].numpy(), [thresholds[label] for label in labels]
    )
    np.testing.assert_array_equal(served["label_mask"].numpy(), mask.astype(np.int32))
    joined = ["|".join(label for label, on in zip(labels, row, strict=True) if on) for row in mask]
    assert [value.decode("utf-8") for value in served["labels"].numpy()] == joined
    for directory in ("onnx", "tflite"):
        assert os.path.isfile(run_dir / directory / "label_thresholds.json")


@pytest.mark.parametrize("artifact", ["1", "onnx/model.onnx"])
def test_predict_prints_label_sets(multilabel_run, artifact, capsys):
    root, _ = multilabel_run
    run_dir = root / "exported" / "multi"
    predict_cli.main([str(run_dir / artifact), "rain at the game", "足球 银行"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predictor = load_predictor(str(run_dir))
    probabilities = predictor.predict(["rain at the game", "足球 银行"])
    assert [record["labels"] for record in records] == predictor.label_sets(probabilities)
    assert "label" not in records[0]
    assert set(records[1]["probabilities"]) == {"money", "sports", "weather"}


def test_evaluate_matches_training_report(multilabel_run, multilabel_data, capsys):
    root, _ = multilabel_run
    run_dir = root / "exported" / "multi"
    output = root / "evaluation"
    evaluate_cli.main(
        ["multi", "--data", multilabel_data[1], "--export-dir", str(root / "exported"),
         "--output", str(output)]
    )  # fmt: skip
    assert "micro-F1" in capsys.readouterr().out
    trained = read_json(run_dir / "metrics.json")
    evaluated = read_json(output / "metrics.json")
    for name in ("micro_f1", "macro_f1", "thresholds", "per_label"):
        assert evaluated[name] == trained[name], name


def test_missing_thresholds_file_is_one_line_error(multilabel_run, tmp_path, capsys):
    root, _ = multilabel_run
    copy = tmp_path / "copied"
    shutil.copytree(root / "exported" / "multi", copy, ignore=shutil.ignore_patterns("1", "2"))
    os.remove(copy / "label_thresholds.json")
    with pytest.raises(SystemExit) as raised:
        predict_cli.main([str(copy), "rain at the game"])
    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "multi-label", "label_thresholds.json")


def test_label_field_without_labels_names_line(tmp_path, multilabel_data, capsys):
    train = write_tsv(tmp_path / "train.tsv", [*TRAIN[:3], ("snow", " | ")])
    with pytest.raises(SystemExit) as raised:
        train_cli.main(
            ["--task", "multilabel", "--label-delimiter", "|", "--backbone", "tiny",
             "--train", train, "--dev", multilabel_data[1], "--export-dir", str(tmp_path)]
        )  # fmt: skip
    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "train.tsv:5:", "label field '|'")


def test_unknown_dev_label_is_one_line_error(tmp_path, multilabel_data, capsys):
    dev = write_tsv(tmp_path / "dev.tsv", [("snow", "weather|politics")])
    with pytest.raises(SystemExit) as raised:
        train_cli.main(
            ["--task", "multilabel", "--label-delimiter", "|", "--backbone", "tiny",
             "--train", multilabel_data[0], "--dev", dev, "--export-dir", str(tmp_path)]
        )  # fmt: skip
    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "politics", "dev.tsv")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--class-weight", "balanced"], "training.class_weight"),
        (["--loss", "focal"], "training.loss"),
    ],
)
def test_unsupported_settings_are_one_line_errors(flags, fragment, multilabel_data, capsys):
    train, dev = multilabel_data
    with pytest.raises(SystemExit) as raised:
        train_cli.main(["--task", "multilabel", "--train", train, "--dev", dev, *flags])
    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "--task multilabel", fragment, flags[0])
