"""`python -m fnn_keras.evaluate` and the decision threshold across artifacts."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

from conftest import SMALL_DEV, assert_one_line_error, write_tsv
from fnn_keras import evaluate as evaluate_cli
from fnn_keras import predict as predict_cli
from fnn_keras.config import config_from_dict
from fnn_keras.export.predictors import PredictorError, load_predictor
from fnn_keras.export.savedmodel import export_saved_model
from fnn_keras.export.trained_run import load_trained_run
from fnn_keras.training import trainer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_evaluate(args, capsys):
    with pytest.raises(SystemExit) as raised:
        evaluate_cli.main(args)
    return raised.value.code, capsys.readouterr().err


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def test_evaluate_matches_training_report(trained_run, small_data, capsys):
    workdir, _ = trained_run
    _, dev = small_data
    export_dir = os.path.join(workdir, "exported")
    output = os.path.join(workdir, "evaluation-of-dev")
    evaluate_cli.main(["tiny-run", "--data", dev, "--export-dir", export_dir, "--output", output])
    stdout = capsys.readouterr().out

    trained = read_json(os.path.join(export_dir, "tiny-run", "metrics.json"))
    evaluated = read_json(os.path.join(output, "metrics.json"))
    trained.pop("train_seconds")
    trained.pop("parameters")
    assert evaluated == trained
    assert f"accuracy {trained['accuracy']:.4f}" in stdout

    with open(os.path.join(output, "report.md"), encoding="utf-8") as file:
        report = file.read()
    assert "| macro average |" in report
    assert "![Confusion matrix, counts](confusion_matrix.png)" in report
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        with open(os.path.join(output, name), "rb") as file:
            assert file.read(8) == PNG_SIGNATURE


def test_evaluate_default_output_under_run(trained_run, small_data, capsys):
    workdir, _ = trained_run
    _, dev = small_data
    export_dir = os.path.join(workdir, "exported")
    evaluate_cli.main(["tiny-run", "--data", dev, "--export-dir", export_dir, "--quiet"])
    capsys.readouterr()
    assert os.path.isfile(
        os.path.join(export_dir, "tiny-run", "evaluations", "dev.tsv", "metrics.json")
    )


def test_evaluate_unknown_label(trained_run, tmp_path, capsys):
    workdir, _ = trained_run
    data = write_tsv(tmp_path / "other.tsv", [("fine", "pos"), ("so so", "neutral")])
    code, err = run_evaluate(
        ["tiny-run", "--data", data, "--export-dir", os.path.join(workdir, "exported")], capsys
    )
    assert code == 2
    assert_one_line_error(err, "other.tsv", "'neutral' (1)")


def test_evaluate_missing_run(tmp_path, small_data, capsys):
    _, dev = small_data
    code, err = run_evaluate(["nope", "--data", dev, "--export-dir", str(tmp_path)], capsys)
    assert code == 2
    assert_one_line_error(err, "Run not found: 'nope'")


def test_evaluate_rejects_batch_size(small_data, capsys):
    _, dev = small_data
    code, err = run_evaluate(["nope", "--data", dev, "--batch-size", "0"], capsys)
    assert code == 2
    assert_one_line_error(err, "--batch-size", "Received: 0")


@pytest.fixture(scope="module")
def threshold_run(tmp_path_factory, small_data):
    """A tiny in-process run with a tuned threshold, without exports."""
    root = tmp_path_factory.mktemp("threshold_run")
    train, dev = small_data
    config = config_from_dict(
        {
            "data": {"train": train, "dev": dev},
            "model": {"backbone": "tiny", "feedback_units": 4},
            "training": {"epochs": 2, "batch_size": 4, "tune_thresholds": True},
            "output": {
                "run_name": "tuned",
                "export": False,
                "log_dir": str(root / "logs"),
                "export_dir": str(root / "exported"),
            },
        }
    )
    result = trainer.train(config, verbose=0)
    return root, result


def test_tuned_threshold_saved_and_reported(threshold_run, small_data, capsys):
    root, result = threshold_run
    run_dir = root / "exported" / "tuned"
    saved = read_json(run_dir / "thresholds.json")
    assert saved["label"] == "pos"
    assert saved["tuned_on"] == small_data[1]
    assert result.metrics["threshold"] == saved["threshold"]
    assert result.metrics["macro_f1"] == pytest.approx(saved["macro_f1"])

    # The evaluation applies the same rule to the same probabilities.
    output = root / "evaluated"
    evaluate_cli.main(
        ["tuned", "--data", small_data[1], "--export-dir", str(root / "exported"),
         "--output", str(output), "--quiet"]
    )  # fmt: skip
    capsys.readouterr()
    trained = read_json(run_dir / "metrics.json")
    trained.pop("train_seconds")
    trained.pop("parameters")
    assert read_json(output / "metrics.json") == trained


@pytest.fixture()
def always_pos_run(threshold_run, tmp_path):
    """A copy of the tuned run whose threshold sends every text to `pos`."""
    root, _ = threshold_run
    run_dir = tmp_path / "always-pos"
    shutil.copytree(root / "exported" / "tuned", run_dir)
    thresholds = read_json(run_dir / "thresholds.json")
    thresholds["threshold"] = 0.0
    (run_dir / "thresholds.json").write_text(json.dumps(thresholds))
    return run_dir


def test_threshold_applied_by_evaluate_and_predict(always_pos_run, small_data, capsys):
    output = always_pos_run / "evaluated"
    evaluate_cli.main(
        [str(always_pos_run), "--data", small_data[1], "--output", str(output), "--quiet"]
    )
    metrics = read_json(output / "metrics.json")
    # Every prediction is `pos`: the `neg` column is empty.
    assert [row[0] for row in metrics["confusion_matrix"]] == [0, 0]
    capsys.readouterr()

    predict_cli.main([str(always_pos_run), "really awful", "good"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["label"] for record in records] == ["pos", "pos"]
    assert all(record["probabilities"]["pos"] < 1.0 for record in records)


def test_threshold_applied_by_saved_model(always_pos_run):
    run = load_trained_run(str(always_pos_run))
    assert run.threshold == 0.0
    path = export_saved_model(
        run.model, run.preprocessor, run.labels, str(always_pos_run / "serving"),
        threshold=run.threshold,
    )  # fmt: skip
    serve = tf.saved_model.load(path).signatures["serving_default"]
    texts = [text for text, _ in SMALL_DEV]
    outputs = serve(text=tf.constant(texts))
    assert [label.decode() for label in outputs["label"].numpy()] == ["pos"] * len(texts)
    np.testing.assert_array_equal(outputs["label_id"].numpy(), [1] * len(texts))


@pytest.mark.parametrize("artifact", ["tflite/model_float32.tflite", "onnx/model.onnx"])
def test_threshold_beside_client_artifacts(trained_run, tmp_path, artifact):
    workdir, _ = trained_run
    directory = os.path.dirname(artifact)
    copy = tmp_path / directory
    shutil.copytree(os.path.join(workdir, "exported", "tiny-run", directory), copy)
    with open(copy / "thresholds.json", "w", encoding="utf-8") as file:
        json.dump({"label": "pos", "threshold": 0.0}, file)
    predictor = load_predictor(str(tmp_path / artifact))
    probabilities = predictor.predict(["awful", "fine"])
    np.testing.assert_array_equal(predictor.label_ids(probabilities), [1, 1])

    with open(copy / "thresholds.json", "w", encoding="utf-8") as file:
        json.dump({"label": "neg", "threshold": 0.0}, file)
    with pytest.raises(PredictorError, match="second label"):
        load_predictor(str(tmp_path / artifact))


def test_evaluate_rejects_same_columns(trained_run, small_data, capsys):
    workdir, _ = trained_run
    code, err = run_evaluate(
        ["tiny-run", "--data", small_data[1], "--export-dir", os.path.join(workdir, "exported"),
         "--text-column", "label"],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(err, "columns must differ", "label, label")


def test_evaluate_output_is_file(trained_run, small_data, tmp_path, capsys):
    workdir, _ = trained_run
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    code, err = run_evaluate(
        ["tiny-run", "--data", small_data[1], "--export-dir", os.path.join(workdir, "exported"),
         "--output", str(existing)],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(err, f"--output {existing} is a file")
    assert existing.read_text() == "keep me"


def test_ensemble_averages_probabilities(
    trained_run, threshold_run, small_data, tmp_path, capsys, caplog
):
    workdir, _ = trained_run
    root, _ = threshold_run
    members = [os.path.join(workdir, "exported", "tiny-run"), str(root / "exported" / "tuned")]
    texts = [text for text, _ in SMALL_DEV[:6]]
    alone = [load_predictor(member).predict(texts) for member in members]
    expected = (alone[0].astype(np.float64) + alone[1]) / 2
    # The two runs differ, so the mean is not either of them.
    assert np.max(np.abs(alone[0] - alone[1])) > 1e-3

    predict_cli.main([*texts, "--ensemble", *members])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [record["text"] for record in records] == texts
    labels = ["neg", "pos"]
    printed = np.array([[record["probabilities"][label] for label in labels] for record in records])
    np.testing.assert_allclose(printed, expected, atol=1e-6)
    assert [record["label_id"] for record in records] == list(np.argmax(expected, axis=1))
    # The tuned run's threshold does not apply to the mean.
    assert "thresholds of" in caplog.text
    assert "tuned" in caplog.text

    # evaluate: metrics of the mean over the whole dev file.
    _, dev = small_data
    dev_texts = [text for text, _ in SMALL_DEV]
    dev_ids = [labels.index(label) for _, label in SMALL_DEV]
    mean = np.mean([load_predictor(member).predict(dev_texts) for member in members], axis=0)
    output = tmp_path / "ensemble-report"
    evaluate_cli.main(["--ensemble", *members, "--data", dev, "--output", str(output), "--quiet"])
    assert "Ensemble" in capsys.readouterr().out
    metrics = read_json(output / "metrics.json")
    assert metrics["ensemble"] == ["tiny-run", "tuned"]
    assert metrics["examples"] == len(dev_texts)
    assert metrics["accuracy"] == pytest.approx(np.mean(np.argmax(mean, axis=1) == dev_ids))


def test_ensemble_needs_matching_runs(trained_run, small_data, tmp_path, capsys):
    workdir, _ = trained_run
    first = os.path.join(workdir, "exported", "tiny-run")
    swapped = tmp_path / "swapped"
    shutil.copytree(first, swapped)
    with open(swapped / "labels.json", "w", encoding="utf-8") as file:
        json.dump(["pos", "neg"], file)
    _, dev = small_data
    for args, fragments in (
        (["--ensemble", first, str(swapped), "--data", dev], ["same labels", "swapped"]),
        (["--ensemble", first, "--data", dev], ["2 or more runs"]),
        ([first, "--ensemble", first, first, "--data", dev], ["not both"]),
    ):
        code, err = run_evaluate(args, capsys)
        assert code == 2
        assert_one_line_error(err, *fragments)
