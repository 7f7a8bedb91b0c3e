import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

from conftest import SMALL_DEV, SMALL_TRAIN, assert_one_line_error, scalar_steps, write_tsv
from fnn_keras import train as train_cli


def test_cli_run_writes_tensorboard_scalars(trained_run):
    workdir, _ = trained_run
    run_logs = os.path.join(workdir, "tensorboard_logs", "tiny-run")
    train_tags = scalar_steps(os.path.join(run_logs, "train"))
    dev_tags = scalar_steps(os.path.join(run_logs, "validation"))

    # 10 examples at batch size 4: 3 steps per epoch, logged every 2 steps.
    # Epoch 0 ends at step 3, which is not a multiple of 2; its epoch
    # scalars must still be there.
    for tag in ("batch_loss", "batch_accuracy", "batch_learning_rate"):
        assert train_tags[tag] == [2, 4, 6], tag
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate"):
        assert train_tags[tag] == [0, 1], tag
    for tag in ("epoch_loss", "epoch_accuracy"):
        assert dev_tags[tag] == [0, 1], tag


def test_cli_run_writes_outputs(trained_run):
    workdir, result = trained_run
    run_dir = os.path.join(workdir, "exported", "tiny-run")
    assert os.path.getsize(os.path.join(run_dir, "checkpoints", "best.weights.h5")) > 0
    assert os.path.getsize(os.path.join(run_dir, "model.keras")) > 0
    assert not os.path.exists(os.path.join(run_dir, "backup"))
    with open(os.path.join(run_dir, "labels.json")) as file:
        assert json.load(file) == ["neg", "pos"]

    with open(os.path.join(run_dir, "metrics.json")) as file:
        metrics = json.load(file)
    assert metrics["examples"] == len(SMALL_DEV)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_label"]) == {"neg", "pos"}
    assert np.sum(metrics["confusion_matrix"]) == len(SMALL_DEV)
    with open(os.path.join(run_dir, "report.md")) as file:
        assert "Confusion matrix" in file.read()
    assert "dev accuracy" in result.stdout
    assert "tensorboard --logdir" in result.stdout


def test_cli_run_saved_model_answers_strings(trained_run):
    workdir, _ = trained_run
    versions = glob.glob(os.path.join(workdir, "exported", "tiny-run", "[0-9]*"))
    assert [os.path.basename(v) for v in versions] == ["1"]
    loaded = tf.saved_model.load(versions[0])
    serve = loaded.signatures["serving_default"]
    assert set(serve.structured_outputs) == {"probabilities", "label", "label_id"}
    outputs = serve(text=tf.constant(["a good film", "服务很坏", ""]))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    labels = [x.decode() for x in outputs["label"].numpy()]
    assert labels == [["neg", "pos"][i] for i in probabilities.argmax(axis=1)]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as raised:
        train_cli.main(args)
    return raised.value.code, capsys.readouterr().err


def test_cli_unknown_dev_labels(tmp_path, capsys):
    train = write_tsv(tmp_path / "train.tsv", SMALL_TRAIN)
    dev = write_tsv(
        tmp_path / "dev.tsv", SMALL_DEV + [("odd", "neutral"), ("odd", "neutral"), ("x", "mixed")]
    )
    code, err = run_cli(
        [
            "--backbone",
            "tiny",
            "--train",
            train,
            "--dev",
            dev,
            "--quiet",
            "--export-dir",
            str(tmp_path / "exported"),
        ],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, "dev.tsv", "'neutral' (2)", "'mixed' (1)")
    assert not os.path.exists(tmp_path / "exported")


@pytest.mark.parametrize("flag", ["--text-column", "--label-column"], ids=["text", "label"])
def test_cli_missing_column(tmp_path, capsys, flag):
    train = write_tsv(tmp_path / "train.tsv", SMALL_TRAIN)
    code, err = run_cli(
        ["--backbone", "tiny", "--train", train, "--dev", train, flag, "sentence", "--quiet"],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, "train.tsv", "'sentence'", flag)


def test_cli_missing_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.tsv")
    code, err = run_cli(
        ["--backbone", "tiny", "--train", missing, "--dev", missing, "--quiet"], capsys
    )
    assert code == 2
    assert_one_line_error(err, "not found", "nope.tsv")


def test_cli_missing_backbone_directory(small_data, capsys):
    train, dev = small_data
    code, err = run_cli(
        ["--backbone", "/no/such/bert", "--train", train, "--dev", dev, "--quiet"],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, "/no/such/bert")


def test_cli_invalid_config_value(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  epochs: 0\n")
    code, err = run_cli(["--config", str(config), "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "training.epochs", "0")


def test_cli_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  epoch: 2\n")
    code, err = run_cli(["--config", str(config), "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "bad.yaml", "epoch", "Valid keys")


def test_cli_refuses_existing_run(trained_run, small_data, capsys, monkeypatch):
    workdir, _ = trained_run
    train, dev = small_data
    monkeypatch.chdir(workdir)
    code, err = run_cli(
        ["--backbone", "tiny", "--train", train, "--dev", dev, "--run-name", "tiny-run", "--quiet"],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, "tiny-run", "already exists")


def test_cli_tune_thresholds_needs_binary(tmp_path, capsys):
    rows = SMALL_TRAIN + [("so so", "mixed"), ("fine i guess", "mixed")]
    train = write_tsv(tmp_path / "train.tsv", rows)
    dev = write_tsv(tmp_path / "dev.tsv", SMALL_DEV + [("meh", "mixed")])
    code, err = run_cli(
        ["--backbone", "tiny", "--train", train, "--dev", dev, "--tune-thresholds",
         "--quiet", "--export-dir", str(tmp_path / "exported")],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(err, "--tune-thresholds needs a binary task", "3 labels")
    assert not os.path.exists(tmp_path / "exported")


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--profile-batches", "20,10"], "Received: '20,10'"),
        (["--profile-batches", "a"], "Received: 'a'"),
        (["--histogram-every-epochs", "-1"], "Received: -1"),
        (["--most-wrong-examples", "5000"], "Received: 5000"),
    ],
    ids=["profile_order", "profile_text", "histograms", "most_wrong"],
)
def test_cli_invalid_summary_flags(flags, fragment, capsys):
    code, err = run_cli(["--backbone", "tiny", *flags], capsys)
    assert code == 2
    assert_one_line_error(err, fragment)


def test_cli_tune_thresholds_needs_both_dev_labels(tmp_path, capsys):
    train = write_tsv(tmp_path / "train.tsv", SMALL_TRAIN)
    dev = write_tsv(
        tmp_path / "dev.tsv", [(text, label) for text, label in SMALL_DEV if label == "pos"]
    )
    code, err = run_cli(
        ["--backbone", "tiny", "--train", train, "--dev", dev, "--tune-thresholds",
         "--quiet", "--export-dir", str(tmp_path / "exported")],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(err, "dev.tsv", "needs dev examples of both labels", "['pos']")


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--fine-tune", "partial"], ["--fine-tune", "invalid choice: 'partial'", "--help"]),
        (["--lora-rank", "2.5"], ["--lora-rank", "invalid int value"]),
        (["--clip-norm", "inf"], ["training.clip_norm", "Received: inf"]),
        (["--adversarial-epsilon", "1e30"], ["training.adversarial_epsilon"]),
        (["--focal-gamma", "1e308"], ["training.focal_gamma"]),
        (["--fine-tune", "lora", "--lora-rank", "33"], ["--lora-rank", "hidden size 32"]),
    ],
    ids=["choice", "int", "clip_inf", "epsilon_huge", "gamma_huge", "rank_above_width"],
)
def test_cli_invalid_fine_tuning_flags(flags, fragments, small_data, tmp_path, capsys):
    train, dev = small_data
    args = ["--backbone", "tiny", "--train", train, "--dev", dev, "--no-export", "--quiet"]
    args += ["--export-dir", str(tmp_path / "exported"), "--log-dir", str(tmp_path / "logs")]
    code, err = run_cli([*args, *flags], capsys)
    assert code == 2
    assert_one_line_error(err, *fragments)


def test_resume_ignores_inactive_settings():
    from fnn_keras.config import config_from_dict, inactive_settings
    from fnn_keras.training.trainer import resume_settings

    config = config_from_dict({"model": {"lora_rank": 4}, "training": {"focal_gamma": 3}})
    assert inactive_settings(config) == [
        "data.label_delimiter",
        "model.lora_rank",
        "training.focal_gamma",
        "training.adversarial_epsilon",
    ]
    assert inactive_settings(config, {"model.lora_rank"}) == ["model.lora_rank"]
    settings = resume_settings(config)
    assert "model.lora_rank" not in settings
    assert "training.focal_gamma" not in settings
    lora = config_from_dict({"model": {"fine_tune": "lora", "lora_rank": 4}})
    assert resume_settings(lora)["model.lora_rank"] == 4
