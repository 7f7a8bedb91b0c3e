import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from fnn_keras.config import ConfigError, parse_class_weight
from fnn_keras.data.labels import LabelError, LabelVocabulary, build_vocabulary, class_weights
from fnn_keras.data.readers import Examples
from fnn_keras.data.summary import (
    shared_texts,
    summarize_split,
    summary_markdown,
    token_lengths,
)
from fnn_keras.training.train_model import TrainingModel


def test_unseen_dev_label_lists_counts():
    with pytest.raises(LabelError) as raised:
        build_vocabulary(["neg", "pos", "pos"], ["pos", "odd", "odd"], None, "train.tsv", "dev.tsv")
    message = str(raised.value)
    assert "dev.tsv" in message
    assert "'odd' (2)" in message
    assert "neg, pos" in message


def test_declared_label_without_training_rows():
    with pytest.raises(LabelError) as raised:
        build_vocabulary(["neg", "pos", "pos"], ["pos"], ["neg", "neutral", "pos"], "train.tsv")
    message = str(raised.value)
    assert "'neutral'" in message
    assert "'pos' (2), 'neg' (1)" in message
    assert "\n" not in message


def test_declared_labels_set_the_class_order():
    vocabulary = build_vocabulary(["b", "a", "c"], ["a"], ["c", "b", "a"])
    assert vocabulary.labels == ["c", "b", "a"]
    with pytest.raises(LabelError, match="not in --labels: 'd' \\(1\\)"):
        build_vocabulary(["b", "a", "d"], ["a"], ["b", "a"], "train.tsv")


def test_dev_label_error_lists_training_counts():
    with pytest.raises(LabelError, match="Training label counts: 'pos' \\(2\\), 'neg' \\(1\\)"):
        build_vocabulary(["neg", "pos", "pos"], ["odd"])


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"data": {"labels": ["neg", "pos", "neg"]}}, "'neg' more than once"),
        ({"data": {"labels": ["neg"]}}, "2 or more labels"),
        ({"data": {"text_pair_column": "label"}}, "columns must differ"),
        ({"training": {"class_weight": "neg=1,pos=2,neg=3"}}, "more than one weight"),
    ],
)
def test_invalid_label_settings(values, fragment):
    from fnn_keras.config import config_from_dict

    with pytest.raises(ConfigError, match=fragment):
        config_from_dict(values)


def test_one_training_label_is_an_error():
    with pytest.raises(LabelError, match="at least 2"):
        build_vocabulary(["pos", "pos"], ["pos"])


def test_balanced_class_weights_on_three_to_one_data():
    vocabulary = LabelVocabulary(["neg", "pos"])
    labels = ["neg"] * 30 + ["pos"] * 10
    weights = class_weights("balanced", vocabulary, labels)
    np.testing.assert_allclose(weights, [40 / (2 * 30), 40 / (2 * 10)])
    assert class_weights("none", vocabulary, labels) == [1.0, 1.0]
    assert class_weights({"neg": 1.0, "pos": 3.0}, vocabulary, labels) == [1.0, 3.0]
    with pytest.raises(LabelError, match="missing: pos"):
        class_weights({"neg": 1.0}, vocabulary, labels)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("balanced", "balanced"),
        ("neg=1,pos=2.5", {"neg": 1.0, "pos": 2.5}),
        ({"负面": 2, "正面": 1}, {"负面": 2.0, "正面": 1.0}),
    ],
)
def test_parse_class_weight(value, expected):
    assert parse_class_weight(value) == expected


@pytest.mark.parametrize("value", ["neg=0,pos=1", "neg=x", "pos", "neg=nan", {"a": True}])
def test_parse_class_weight_rejects(value):
    with pytest.raises(ConfigError, match="class_weight"):
        parse_class_weight(value)


def test_class_weighted_loss_equals_hand_computed_mean():
    """`--class-weight balanced` on 3:1 data: the step loss is the weighted mean."""
    vocabulary = LabelVocabulary(["neg", "pos"])
    train_labels = ["neg"] * 3 + ["pos"]
    weights = class_weights("balanced", vocabulary, train_labels)  # [2/3, 2]

    inputs = keras.Input(shape=(3,))
    classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    classifier.set_weights(
        [np.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.1]], "float32"), np.zeros(2, "float32")]
    )
    model = TrainingModel(
        classifier,
        keras.losses.SparseCategoricalCrossentropy(reduction=None),
        class_weights=weights,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x = np.array([[1, 0, 2], [0, 1, 1], [2, 2, 0], [1, -1, 1]], "float32")
    y = np.array(vocabulary.encode(["neg", "neg", "pos", "neg"]))

    probabilities = classifier.predict(x, verbose=0)
    per_example = -np.log(probabilities[np.arange(4), y])
    expected = np.sum(np.array(weights)[y] * per_example) / len(y)
    unweighted = per_example.mean()
    assert abs(expected - unweighted) > 0.01  # the weights matter on this batch

    history = model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)
    # Evaluation is unweighted, as with Keras's `class_weight`.
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), unweighted, rtol=1e-5)


def test_summary_counts_duplicates_lengths_and_truncation(tiny_bundle):
    texts = ["good film", "bad film", "good film", "good film", "a " * 40, "fine"]
    labels = ["pos", "neg", "pos", "neg", "pos", "pos"]
    examples = Examples("train.tsv", texts, labels, list(range(2, 8)), {"empty text": 2})
    lengths = token_lengths(tiny_bundle.tokenizer, texts)
    assert lengths[0] == 4
    assert lengths[4] == 42
    summary = summarize_split(examples, tiny_bundle.tokenizer, 16, lengths, max_positions=128)
    assert summary["kept"] == 6
    assert summary["skipped"] == {"empty text": 2}
    assert summary["label_counts"] == {"pos": 4, "neg": 2}
    assert summary["duplicates"] == 2
    assert summary["duplicates_with_other_label"] == 1
    assert summary["truncated"] == 1
    assert summary["truncated_fraction"] == round(1 / 6, 4)
    assert summary["token_length"]["max"] == 42
    assert summary["suggested_sequence_length"] == 42
    capped = summarize_split(examples, tiny_bundle.tokenizer, 16, lengths, max_positions=32)
    assert capped["suggested_sequence_length"] == 32
    json.dumps(summary)  # JSON-ready

    document = {"train": summary, "dev": summary, "dev_texts_in_train": 3}
    markdown = summary_markdown(document)
    assert "| duplicates (other label) | 2 (1) | 2 (1) |" in markdown
    assert "| suggested sequence length (covers) | 42 (100.0%) | 42 (100.0%) |" in markdown
    assert "Dev texts also in the training data: 3." in markdown


def test_shared_texts_counts_dev_rows():
    assert shared_texts(["a", "b", "b"], ["b", "c", "b", "a"]) == 3


def test_truncation_warning_names_covering_length(tiny_bundle, caplog):
    from fnn_keras.data.summary import log_summary

    texts = ["good " * n for n in range(1, 21)]
    examples = Examples("train.tsv", texts, ["pos"] * 20, list(range(20)), {})
    summary = summarize_split(examples, tiny_bundle.tokenizer, 8, max_positions=128)
    assert summary["truncated"] == 14  # 7 to 20 words: 9 to 22 tokens
    with caplog.at_level("WARNING"):
        log_summary("train", summary)
    assert "14 of 20 texts (70.0%)" in caplog.text
    assert "--sequence-length 21 would cover 95.0% of the texts" in caplog.text
    assert summary["suggested_sequence_length"] == 21
    assert summary["suggested_coverage"] == 0.95

    capped = summarize_split(examples, tiny_bundle.tokenizer, 8, max_positions=12)
    assert capped["suggested_sequence_length"] == 12
    assert capped["suggested_coverage"] == 0.5  # 1 to 10 words: 3 to 12 tokens
    caplog.clear()
    with caplog.at_level("WARNING"):
        log_summary("train", capped)
    assert "--sequence-length 12 would cover 50.0% of the texts" in caplog.text


def test_empty_texts_skipped_loss_finite(tmp_path, strategies):
    from conftest import SMALL_DEV, SMALL_TRAIN, scalar_values, write_tsv
    from fnn_keras.config import config_from_dict
    from fnn_keras.training.trainer import train

    rows = SMALL_TRAIN + [("", "pos"), ("   ", "neg"), ("\t", "pos"), ("\u3000", "neg")]
    train_path = tmp_path / "train.tsv"
    # The tab row has three fields; write it by hand so the file keeps it.
    write_tsv(train_path, [row for row in rows if row[0] != "\t"])
    with open(train_path, "a", encoding="utf-8") as file:
        file.write("\t\tpos\n")
    config = config_from_dict(
        {
            "data": {"train": str(train_path), "dev": write_tsv(tmp_path / "dev.tsv", SMALL_DEV)},
            "model": {"backbone": "tiny", "feedback_units": 8},
            "training": {"epochs": 1, "batch_size": 4, "log_every_steps": 1},
            "output": {
                "run_name": "run",
                "export": False,
                "export_dir": str(tmp_path / "exported"),
                "log_dir": str(tmp_path / "logs"),
            },
        }
    )
    result = train(config, strategy=strategies[1], verbose=0)
    with open(result.paths.data_summary, encoding="utf-8") as file:
        summary = json.load(file)["train"]
    assert summary["kept"] == len(SMALL_TRAIN)
    assert summary["skipped"] == {
        "empty text": 3,
        "wrong number of fields (expected 2)": 1,
    }
    losses = scalar_values(str(tmp_path / "logs" / "run" / "train"), "batch_loss")
    assert losses
    assert all(np.isfinite(value) for value in losses.values())
