"""Exports of a tagging run: SavedModel, ONNX and TFLite against the Keras model."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the served graph uses)
from tagging_data import write_tagging_files

from conftest import run_python

# The float32 artifacts compute what Keras computes, in another op order.
MAX_ABS_DIFF = 1e-4


@pytest.fixture(scope="module")
def exported_tagging_run(tmp_path_factory):
    """A 1-epoch tiny tagging run through the CLI, exported to every format."""
    workdir = tmp_path_factory.mktemp("tagging_export")
    train, dev = write_tagging_files(workdir, train_count=16, dev_count=8)
    result = run_python(
        [
            "-m",
            "fnn_keras.train",
            "--task",
            "tagging",
            "--train",
            train,
            "--dev",
            dev,
            "--backbone",
            "tiny",
            "--vocabulary",
            "train",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--sequence-length",
            "24",
            "--feedback-units",
            "8",
            "--run-name",
            "ner",
            "--quiet",
        ],
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((workdir / "exported" / "ner" / "export_report.json").read_text())
    return workdir, result, report


def _artifact(report, export_format, variant):
    matches = [
        a for a in report["artifacts"] if a["format"] == export_format and a["variant"] == variant
    ]
    assert len(matches) == 1, report["artifacts"]
    return matches[0]


def test_every_format_exported(exported_tagging_run):
    _, result, report = exported_tagging_run

    assert report["failed"] == []
    assert report["parity_examples"] == 8
    assert "Export ok      tflite float32" in result.stdout


@pytest.mark.parametrize(
    "export_format, variant",
    [
        ("saved_model", "predict_ids"),
        ("saved_model", "serving_default"),
        ("onnx", "opset17"),
        ("tflite", "float32"),
    ],
    ids=["saved_model_ids", "saved_model_text", "onnx", "tflite"],
)
def test_artifact_matches_keras(exported_tagging_run, export_format, variant):
    _, _, report = exported_tagging_run

    parity = _artifact(report, export_format, variant)["parity"]

    assert parity["pieces"] > 8
    assert parity["max_abs_diff"] <= MAX_ABS_DIFF
    assert parity["top1_agreement"] == 1.0


def test_served_text_tokens_match_python(exported_tagging_run):
    _, _, report = exported_tagging_run

    assert _artifact(report, "saved_model", "serving_default")["token_ids_match"] is True


def test_tflite_has_builtin_ops_only(exported_tagging_run):
    _, _, report = exported_tagging_run

    tflite = _artifact(report, "tflite", "float32")

    assert tflite["non_builtin_ops"] == []
    assert tflite["signature_lengths"] == [16, 24]


def test_served_text_offsets(exported_tagging_run):
    workdir, _, _ = exported_tagging_run
    loaded = tf.saved_model.load(str(workdir / "exported" / "ner" / "1"))
    texts = ["张三在北京的华为公司工作。", "Mary  Smith works at Acme."]
    labels = json.loads((workdir / "exported" / "ner" / "labels.json").read_text())

    outputs = loaded.signatures["serving_default"](text=tf.constant(texts))

    expected_words = [
        list("张三在北京的华为公司工作。"),
        ["Mary", "Smith", "works", "at", "Acme", "."],
    ]
    for row, text in enumerate(texts):
        data = text.encode("utf-8")
        first = outputs["first_piece"][row].numpy().astype(bool)
        starts = outputs["start"][row].numpy()[first]
        ends = outputs["end"][row].numpy()[first]
        words = [data[s:e].decode("utf-8") for s, e in zip(starts, ends, strict=True)]
        assert words == expected_words[row]
        tags = [t.decode() for t in outputs["tags"][row].numpy()[first]]
        ids = outputs["tag_ids"][row].numpy()[first]
        assert tags == [labels[i] for i in ids]
    assert outputs["probabilities"].shape[-1] == len(labels)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1)[0, :3], 1.0, atol=1e-5)


def test_export_cli_reexports_onnx(exported_tagging_run):
    workdir, _, _ = exported_tagging_run

    result = run_python(
        ["-m", "fnn_keras.export", "ner", "--formats", "onnx", "--parity-examples", "4"],
        cwd=workdir,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok      onnx opset17" in result.stdout
    report = json.loads((workdir / "exported" / "ner" / "export_report.json").read_text())
    assert report["parity_examples"] == 4
    assert report["artifacts"][0]["parity"]["max_abs_diff"] <= MAX_ABS_DIFF


@pytest.mark.parametrize(
    "artifact", ["ner/1", "ner/onnx/model.onnx", "ner/tflite/model_float32.tflite", "ensemble"]
)
def test_predict_rejects_tagging_exports(exported_tagging_run, artifact, capsys):
    from conftest import assert_one_line_error
    from fnn_keras import predict as predict_cli

    workdir, _, _ = exported_tagging_run
    exported = workdir / "exported"
    if artifact == "ensemble":
        args = ["张三", "--export-dir", str(exported), "--ensemble", "ner", "ner"]
    else:
        args = [str(exported / artifact), "张三"]
    with pytest.raises(SystemExit) as raised:
        predict_cli.main(args)
    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "token tagging model", "model.keras")


def test_evaluate_rejects_tagging_run(exported_tagging_run, capsys):
    from conftest import assert_one_line_error
    from fnn_keras import evaluate as evaluate_cli

    workdir, _, _ = exported_tagging_run
    with pytest.raises(SystemExit) as raised:
        evaluate_cli.main(
            ["ner", "--export-dir", str(workdir / "exported"), "--data", str(workdir / "x.tsv")]
        )
    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "token tagging run", "metrics.json")
