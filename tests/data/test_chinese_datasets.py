"""ChnSentiCorp and TNEWS from ../shared/data on a tiny BERT with a Chinese character vocabulary."""

import json
import os

import keras
import keras_hub
import pytest
import tensorflow as tf

from conftest import SHARED_DATA
from fnn_keras.backbones import TINY_CONFIG, load_backbone
from fnn_keras.config import config_from_dict
from fnn_keras.data.readers import read_examples
from fnn_keras.data.summary import token_lengths
from fnn_keras.layout import run_paths

CHNSENTICORP = os.path.join(SHARED_DATA, "chnsenticorp")
TNEWS = os.path.join(SHARED_DATA, "tnews")

pytestmark = pytest.mark.skipif(
    not os.path.isdir(CHNSENTICORP) or not os.path.isdir(TNEWS),
    reason=f"needs the shared datasets in {SHARED_DATA}, which a fresh clone does not have",
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _character_vocabulary(texts):
    """Every character of `texts` (lowercased) as a token, plus `##` pieces for letters and digits."""
    characters = sorted({c for text in texts for c in text.lower() if not c.isspace()})
    pieces = ["##" + c for c in characters if c.isascii() and c.isalnum()]
    return SPECIAL_TOKENS + characters + pieces


@pytest.fixture(scope="module")
def chinese_preset(tmp_path_factory):
    """A keras-hub preset directory: a random tiny BERT on ChnSentiCorp's and TNEWS's characters."""
    texts = []
    for folder in (CHNSENTICORP, TNEWS):
        texts += read_examples(os.path.join(folder, "train.tsv")).texts
    vocabulary = _character_vocabulary(texts)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), **TINY_CONFIG)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    directory = str(tmp_path_factory.mktemp("chinese_preset"))
    backbone.save_to_preset(directory)
    tokenizer.save_to_preset(directory)
    return directory


def _config(tmp_path, folder, backbone, **data):
    return config_from_dict(
        {
            "data": {
                "train": os.path.join(folder, "train.tsv"),
                "dev": os.path.join(folder, "dev.tsv"),
                "sequence_length": 64,
                **data,
            },
            "model": {"backbone": backbone, "feedback_units": 16},
            "training": {"epochs": 1, "batch_size": 64, "log_every_steps": 50},
            "output": {
                "run_name": "run",
                "export": False,
                "export_dir": str(tmp_path / "exported"),
                "log_dir": str(tmp_path / "logs"),
            },
        }
    )


def test_chinese_texts_split_into_characters(chinese_preset):
    bundle = load_backbone(chinese_preset)
    tokens = bundle.tokenizer(tf.constant(["酒店很好，服务不错！"]))[0]
    words = [bundle.tokenizer.id_to_token(i) for i in tokens]
    assert words == ["酒", "店", "很", "好", "，", "服", "务", "不", "错", "！"]
    texts = read_examples(os.path.join(CHNSENTICORP, "dev.tsv")).texts[:200]
    unknown = sum(
        row.count(bundle.tokenizer.token_to_id("[UNK]"))
        for row in bundle.tokenizer(tf.constant(texts))
    )
    # Dev characters missing from the training files become [UNK]; they are rare.
    assert unknown < 0.01 * token_lengths(bundle.tokenizer, texts).sum()


def test_chnsenticorp_one_epoch_and_data_summary(chinese_preset, strategies, tmp_path):
    from fnn_keras.training.trainer import train

    config = _config(tmp_path, CHNSENTICORP, chinese_preset)
    result = train(config, strategy=strategies[1], verbose=0)
    assert result.epochs_run == 1
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    with open(result.paths.data_summary, encoding="utf-8") as file:
        summary = json.load(file)
    # Row, label and repeat counts of the published files.
    assert summary["train"]["rows_read"] == 8913
    assert summary["train"]["kept"] == 8913
    assert summary["train"]["label_counts"] == {"1": 4585, "0": 4328}
    assert summary["train"]["duplicates"] == 1324
    assert summary["dev"]["kept"] == 1161
    assert summary["dev"]["label_counts"] == {"0": 584, "1": 577}
    assert summary["dev_texts_in_train"] == 0
    # Reviews are long: most are truncated at 64 tokens.
    assert summary["train"]["truncated"] > 0.5 * 8913
    assert summary["train"]["suggested_sequence_length"] == 128  # the tiny BERT's maximum

    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(os.path.join(result.paths.log_dir, "data"))
    accumulator.Reload()
    (event,) = accumulator.Tensors("data_summary")
    text = tf.make_ndarray(event.tensor_proto).item().decode("utf-8")
    assert "| kept | 8913 | 1161 |" in text


def test_tnews_label_map_round_trips_through_export(chinese_preset, strategies, tmp_path):
    from fnn_keras.export.exporter import export_run
    from fnn_keras.export.predictors import load_predictor
    from fnn_keras.export.trained_run import load_trained_run
    from fnn_keras.training.trainer import train

    config = _config(tmp_path, TNEWS, chinese_preset, max_train_examples=3000)
    result = train(config, strategy=strategies[1], verbose=0)
    with open(result.paths.data_summary, encoding="utf-8") as file:
        summary = json.load(file)
    assert len(summary["train"]["label_counts"]) == 15
    assert summary["train"]["skipped"] == {"beyond --max-train-examples": 46150 - 3000}

    run = load_trained_run(run_paths(config.output, "run").run_dir)
    assert len(run.labels) == 15
    dev = read_examples(os.path.join(TNEWS, "dev.tsv"))
    texts = dev.texts[:64]
    report = export_run(
        run,
        texts,
        [run.labels.index(label) for label in dev.labels[:64]],
        formats=("saved_model", "onnx"),
    )
    assert not report["failed"], report["failed"]

    features = run.preprocessor(tf.constant(texts))
    keras_ids = run.model.predict(features, verbose=0).argmax(axis=1)
    keras_labels = [run.labels[i] for i in keras_ids]
    assert len(report["artifacts"]) >= 2
    for artifact in report["artifacts"]:
        predictor = load_predictor(artifact["path"])
        assert predictor.labels == run.labels
        assert [
            predictor.labels[i] for i in predictor.predict(texts).argmax(axis=1)
        ] == keras_labels
