"""Sentence-pair tasks: `--text-pair-column` from the file to the exported model."""

import numpy as np
import pytest
import tensorflow as tf

from fnn_keras.data.pipeline import (
    build_preprocessor,
    make_dataset,
    make_training_dataset,
    string_inputs,
)
from fnn_keras.data.summary import token_lengths

QUESTIONS = ["is the film good", "was it boring", "do you like the story", "is it bad"]
ANSWERS = ["yes it is great", "no", "i love the story very much", "not at all"]
PAIRS = list(zip(QUESTIONS, ANSWERS, strict=True))


def test_pair_features_mark_the_second_segment(tiny_bundle):
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 32)
    features = preprocessor(x=string_inputs(PAIRS[:1]))
    segment_ids = np.asarray(features["segment_ids"])[0]
    mask = np.asarray(features["padding_mask"])[0].astype(bool)
    first = len(tiny_bundle.tokenizer(tf.constant(QUESTIONS[:1]))[0]) + 2  # [CLS] a [SEP]
    second = len(tiny_bundle.tokenizer(tf.constant(ANSWERS[:1]))[0]) + 1  # b [SEP]
    assert list(segment_ids[mask]) == [0] * first + [1] * second
    lengths = token_lengths(tiny_bundle.tokenizer, PAIRS)
    assert lengths[0] == first + second
    assert lengths.shape == (4,)


def test_pair_datasets_keep_pairs_together(tiny_bundle):
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 32)
    pairs = PAIRS
    expected = preprocessor(x=string_inputs(pairs))["token_ids"].numpy()
    (features, labels), *_ = list(make_dataset(pairs, [0, 1, 0, 1], preprocessor, 4))
    width = features["token_ids"].shape[1]
    np.testing.assert_array_equal(features["token_ids"], expected[:, :width])
    assert labels.numpy().tolist() == [0, 1, 0, 1]
    (inputs_only,) = list(make_dataset(pairs, None, preprocessor, 4))
    np.testing.assert_array_equal(inputs_only["token_ids"], features["token_ids"])

    lengths = token_lengths(tiny_bundle.tokenizer, pairs)
    dataset = make_training_dataset(
        pairs, [0, 1, 2, 3], preprocessor, 2, seed=0, first_epoch=0, end_epoch=1, lengths=lengths
    )
    for batch, label_ids in dataset:
        for row, label in zip(batch["token_ids"].numpy(), label_ids.numpy(), strict=True):
            width = row.shape[0]
            padded = np.pad(row, (0, 32 - width))
            np.testing.assert_array_equal(padded, expected[label])


def test_string_inputs_rejects_pairs_of_other_sizes():
    with pytest.raises(ValueError, match="exactly two"):
        string_inputs([("a", "b"), ("a", "b", "c")])


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, strategies):
    """A tiny sentence-pair run, trained and exported to every format."""
    from fnn_keras.config import config_from_dict
    from fnn_keras.training.trainer import train

    root = tmp_path_factory.mktemp("pairs")
    rows = [(q, a, "yes" if i % 2 == 0 else "no") for i, (q, a) in enumerate(PAIRS * 6)]
    for name in ("train.tsv", "dev.tsv"):
        with open(root / name, "w", encoding="utf-8") as file:
            file.write("question\tanswer\tlabel\n")
            file.writelines("\t".join(row) + "\n" for row in rows)
    config = config_from_dict(
        {
            "data": {
                "train": str(root / "train.tsv"),
                "dev": str(root / "dev.tsv"),
                "text_column": "question",
                "text_pair_column": "answer",
                "sequence_length": 32,
            },
            "model": {"backbone": "tiny", "feedback_units": 8},
            "training": {"epochs": 1, "batch_size": 8},
            "output": {
                "run_name": "pairs",
                "export_dir": str(root / "exported"),
                "log_dir": str(root / "logs"),
            },
        }
    )
    return train(config, strategy=strategies[1], verbose=0)


def test_pair_run_exports_pass_parity(pair_run):
    report = pair_run.export_report
    failed = [name for name in report["failed"] if "full_int8" not in name]
    assert not failed, report["failed"]
    assert report["parity_examples"] == 24


def test_pair_artifacts_take_both_texts(pair_run):
    from fnn_keras.export.predictors import PredictorError, load_predictor
    from fnn_keras.export.trained_run import load_trained_run

    run = load_trained_run(pair_run.paths.run_dir)
    assert run.text_pair
    reference = run.model.predict(run.preprocessor(x=string_inputs(PAIRS)), verbose=0)
    saved = tf.saved_model.load(f"{pair_run.paths.run_dir}/1")
    for name in ("serving_default", "tokenize"):
        inputs = saved.signatures[name].structured_input_signature[1]
        assert sorted(inputs) == ["text", "text_pair"]

    artifacts = [pair_run.paths.run_dir] + [
        entry["path"] for entry in pair_run.export_report["artifacts"] if "error" not in entry
    ]
    assert len(artifacts) >= 5
    for artifact in artifacts:
        predictor = load_predictor(artifact)
        assert predictor.text_pair, artifact
        np.testing.assert_allclose(predictor.predict(PAIRS), reference, atol=0.02, err_msg=artifact)
        with pytest.raises(PredictorError, match="text_pair"):
            predictor.predict(QUESTIONS)


def test_predict_cli_reads_tab_separated_pairs(pair_run, capsys):
    import json

    from fnn_keras import predict

    predict.main([pair_run.paths.run_dir, "is the film good\tyes it is great"])
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == "is the film good"
    assert record["text_pair"] == "yes it is great"
    with pytest.raises(SystemExit) as raised:
        predict.main([pair_run.paths.run_dir, "no tab here"])
    assert raised.value.code == 2
    assert "text<TAB>text_pair" in capsys.readouterr().err


def test_export_cli_reads_the_runs_columns(pair_run, capsys):
    """`python -m fnn_keras.export RUN` reads the dev pairs with the run's own columns."""
    import json

    from fnn_keras.export import __main__ as export_cli

    export_cli.main([pair_run.paths.run_dir, "--formats", "onnx", "--quiet"])
    with open(pair_run.paths.export_report, encoding="utf-8") as file:
        report = json.load(file)
    assert report["parity_examples"] == 24
    assert report["keras_accuracy"] == pytest.approx(pair_run.metrics["accuracy"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        export_cli.main([pair_run.paths.run_dir, "--text-pair-column", "hypothesis", "--quiet"])
    assert raised.value.code == 2
    assert "'hypothesis'" in capsys.readouterr().err
