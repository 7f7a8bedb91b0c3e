"""End-to-end tests of `--task tagging`: training CLI, outputs and predict."""

import json

import keras
import numpy as np
import pytest
from tagging_data import tagging_sentences, write_conll, write_tagging_files

from conftest import assert_one_line_error, run_python, scalar_steps
from fnn_keras import train as train_cli
from fnn_keras.backbones import vocabulary_from_tokens
from fnn_keras.config import DataConfig
from fnn_keras.export.tagging_predict import predict_entities
from fnn_keras.export.trained_run import TrainedRun
from fnn_keras.models.classifier import INPUT_NAMES
from fnn_keras.tokenizer import HuggingFaceBertTokenizer

METRIC_KEYS = (
    "entity_precision",
    "entity_recall",
    "entity_f1",
    "examples",
    "entities",
    "predicted_entities",
    "per_type",
    "token_accuracy",
)


@pytest.fixture(scope="module")
def tagging_run(tmp_path_factory):
    """A 1-epoch tiny tagging run on 2 replicas, through the CLI, without export."""
    workdir = tmp_path_factory.mktemp("tagging_run")
    train, dev = write_tagging_files(workdir)
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
            "--strategy",
            "mirrored",
            "--cpu-devices",
            "2",
            "--log-every-steps",
            "2",
            "--no-export",
            "--run-name",
            "ner",
            "--quiet",
        ],
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_cli_prints_entity_scores(tagging_run):
    _, result = tagging_run

    assert "dev entity F1 " in result.stdout
    assert "(12 sentences)" in result.stdout


def test_run_writes_metrics_and_report(tagging_run):
    workdir, _ = tagging_run
    run_dir = workdir / "exported" / "ner"

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    for key in METRIC_KEYS:
        assert key in metrics, key
    assert metrics["examples"] == 12
    # Every dev sentence has a NAME and an ORG; the Chinese ones add a LOC.
    assert metrics["entities"] == 12 * 2 + 6
    assert 0.0 <= metrics["entity_f1"] <= 1.0
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| type | precision | recall | F1 | gold | predicted | correct |" in report
    assert "| NAME |" in report


def test_run_saves_tags_and_vocabulary(tagging_run):
    workdir, _ = tagging_run
    run_dir = workdir / "exported" / "ner"

    labels = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
    assert labels == ["O", "B-LOC", "B-NAME", "B-ORG", "I-LOC", "I-NAME", "I-ORG"]
    vocabulary = (run_dir / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert "华" in vocabulary
    assert "Acme" in vocabulary
    settings = json.loads((run_dir / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    assert settings["lowercase"] is False
    assert (run_dir / "model.keras").is_file()
    summary = json.loads((run_dir / "data_summary.json").read_text(encoding="utf-8"))
    assert summary["train"]["sentences"] == 48
    assert summary["dev"]["truncated_sentences"] == 0


def test_tensorboard_has_dev_entity_f1(tagging_run):
    workdir, _ = tagging_run

    steps = scalar_steps(str(workdir / "tensorboard_logs" / "ner" / "validation"))

    assert steps["epoch_entity_f1"] == [0]
    assert steps["epoch_loss"] == [0]
    train_steps = scalar_steps(str(workdir / "tensorboard_logs" / "ner" / "train"))
    assert train_steps["epoch_token_accuracy"] == [0]
    # 48 sentences in batches of 8: 6 steps, scalars every 2.
    assert train_steps["batch_loss"] == [2, 4, 6]
    assert train_steps["batch_token_accuracy"] == [2, 4, 6]


def test_predict_cli_prints_offsets(tagging_run):
    workdir, _ = tagging_run
    texts = ["张三在北京的华为公司工作。", "Mary Smith works at Acme ."]

    result = run_python(["-m", "fnn_keras.predict", "ner", *texts], cwd=workdir)

    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["text"] for record in records] == texts
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]
            assert entity["type"] in ("LOC", "NAME", "ORG")


def test_unknown_dev_tag_is_one_line_error(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", tagging_sentences(4, seed=1))
    dev = write_conll(tmp_path / "dev.conll", [[("巴", "B-CITY")]])
    args = ["--task", "tagging", "--train", train, "--dev", dev, "--backbone", "tiny", "--quiet"]

    with pytest.raises(SystemExit) as raised:
        train_cli.main(args)

    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "dev.conll", "'B-CITY' (1)")


def test_vocabulary_with_pretrained_backbone_is_one_line_error(tmp_path, capsys):
    args = ["--task", "tagging", "--train", "t.conll", "--dev", "d.conll", "--backbone",
            "minilm", "--vocabulary", "train", "--quiet"]  # fmt: skip

    with pytest.raises(SystemExit) as raised:
        train_cli.main(args)

    assert raised.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "--vocabulary", "backbone='minilm'")


def _lookup_tagger(tokenizer, labels, tag_of_token):
    """A Keras model that tags each piece by a fixed table from piece to tag."""
    vocabulary = tokenizer.get_vocabulary()
    table = np.zeros((len(vocabulary), len(labels)), np.float32)
    table[:, 0] = 1.0
    for token, tag in tag_of_token.items():
        row = vocabulary.index(token)
        table[row] = 0.0
        table[row, labels.index(tag)] = 1.0
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in INPUT_NAMES}
    lookup = keras.layers.Embedding(len(vocabulary), len(labels), trainable=False)
    outputs = lookup(inputs["token_ids"])
    model = keras.Model(inputs, outputs)
    lookup.set_weights([table])
    return model


def test_predict_entities_offsets():
    labels = ["O", "B-LOC", "B-NAME", "B-ORG", "I-LOC", "I-NAME", "I-ORG"]
    vocabulary = vocabulary_from_tokens(list("张三在北京工作") + ["Acme", "works", "Mary"])
    tokenizer = HuggingFaceBertTokenizer(vocabulary)
    model = _lookup_tagger(
        tokenizer,
        labels,
        {"张": "B-NAME", "三": "I-NAME", "北": "B-LOC", "京": "I-LOC", "Acme": "B-ORG"},
    )
    run = TrainedRun(
        paths=None,
        model=model,
        tokenizer=tokenizer,
        preprocessor=None,
        labels=labels,
        sequence_length=16,
        dev_path=None,
        data=DataConfig(task="tagging"),
    )
    texts = ["  张三在北京工作", "Mary works at Acme, 北京!", "Acme"]

    records = predict_entities(run, texts)

    assert records[0]["entities"] == [
        {"type": "NAME", "text": "张三", "start": 2, "end": 4},
        {"type": "LOC", "text": "北京", "start": 5, "end": 7},
    ]
    assert records[1]["entities"] == [
        {"type": "ORG", "text": "Acme", "start": 14, "end": 18},
        {"type": "LOC", "text": "北京", "start": 20, "end": 22},
    ]
    assert records[2]["entities"] == [{"type": "ORG", "text": "Acme", "start": 0, "end": 4}]
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]


def test_predict_truncates_long_text_to_o():
    labels = ["O", "B-LOC", "I-LOC"]
    tokenizer = HuggingFaceBertTokenizer(vocabulary_from_tokens(list("北京")))
    model = _lookup_tagger(tokenizer, labels, {"北": "B-LOC", "京": "I-LOC"})
    run = TrainedRun(None, model, tokenizer, None, labels, 6, None, data=DataConfig(task="tagging"))

    # Room for 4 pieces: the second 北京 starts at the 5th word and is cut off.
    records = predict_entities(run, ["北京京京北京"])

    assert records[0]["entities"] == [{"type": "LOC", "text": "北京京京", "start": 0, "end": 4}]
