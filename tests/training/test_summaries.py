"""TensorBoard summaries, read back with TensorBoard's own event reader."""

import glob
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from conftest import SMALL_DEV, SMALL_TRAIN
from fnn_keras.backbones import load_backbone
from fnn_keras.config import config_from_dict
from fnn_keras.data.pipeline import build_preprocessor, make_dataset, make_training_dataset
from fnn_keras.evaluation.metrics import example_losses
from fnn_keras.training.callbacks import build_callbacks
from fnn_keras.training.summaries import (
    DevEvaluation,
    hparam_values,
    most_wrong_markdown,
    write_hparams,
)
from fnn_keras.training.train_model import build_training_model

LABELS = ["neg", "pos"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_events(directory):
    """Map each tag in a TensorBoard directory to `(plugin name, events)`."""
    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: (
            accumulator.SummaryMetadata(tag).plugin_data.plugin_name,
            accumulator.Tensors(tag),
        )
        for tag in accumulator.Tags()["tensors"]
    }


def steps_of(events, tag, plugin):
    name, tensors = events[tag]
    assert name == plugin, (tag, name)
    return [event.step for event in tensors]


def value(event):
    return tf.make_ndarray(event.tensor_proto)


@pytest.fixture(scope="module")
def run_logs(trained_run):
    workdir, _ = trained_run
    return workdir, os.path.join(workdir, "tensorboard_logs", "tiny-run")


def test_step_and_epoch_scalars(run_logs):
    _, logs = run_logs
    train = read_events(os.path.join(logs, "train"))

    # 10 examples at batch size 4: 3 steps an epoch, 6 in all, logged every 2.
    step_tags = [
        "batch_loss",
        "batch_accuracy",
        "batch_gradient_norm",
        "batch_learning_rate",
        "batch_examples_per_second",
    ]
    for tag in step_tags:
        assert steps_of(train, tag, "scalars") == [2, 4, 6], tag
    epoch_tags = [
        "epoch_loss",
        "epoch_accuracy",
        "epoch_learning_rate",
        "epoch_examples_per_second",
    ]
    for tag in epoch_tags:
        assert steps_of(train, tag, "scalars") == [0, 1], tag

    for tag in ("batch_gradient_norm", "batch_examples_per_second", "epoch_examples_per_second"):
        values = [float(value(event)) for event in train[tag][1]]
        assert all(math.isfinite(v) and v > 0 for v in values), (tag, values)
    # Step values stay out of the epoch logs, where Keras would keep the last step's.
    assert "epoch_gradient_norm" not in train


def test_dev_metrics_images_and_curves(run_logs):
    _, logs = run_logs
    dev = read_events(os.path.join(logs, "validation"))

    scalar_tags = [
        "epoch_loss",
        "epoch_accuracy",
        "epoch_macro_f1",
        "epoch_weighted_f1",
        "epoch_macro_precision",
        "epoch_macro_recall",
    ]
    for label in LABELS:
        scalar_tags += [f"class_precision/{label}", f"class_recall/{label}", f"class_f1/{label}"]
    for tag in scalar_tags:
        assert steps_of(dev, tag, "scalars") == [0, 1], tag

    for tag in ("confusion_matrix/counts", "confusion_matrix/row_fractions"):
        assert steps_of(dev, tag, "images") == [0, 1], tag
        for event in dev[tag][1]:
            width, height, png = value(event)
            assert png.startswith(PNG_SIGNATURE)
            assert int(width) > 100
            assert int(height) > 100

    for label in LABELS:
        tag = f"pr_curve/{label}/pr_curves"
        assert steps_of(dev, tag, "pr_curves") == [0, 1], tag
        curve = value(dev[tag][1][-1])
        # Rows: true/false positives and negatives, precision, recall; one column a threshold.
        assert curve.shape == (6, 201)
        # At threshold 0 every example is predicted positive: the label's dev count.
        assert curve[0, 0] == sum(1 for _, y in SMALL_DEV if y == label)

    assert steps_of(dev, "per_class", "text") == [0, 1]
    table = value(dev["per_class"][1][-1]).item().decode()
    assert "| neg |" in table
    assert "| macro average |" in table


def test_most_wrong_table_lists_misclassified_dev_texts(run_logs):
    _, logs = run_logs
    dev = read_events(os.path.join(logs, "validation"))
    assert steps_of(dev, "most_wrong", "text") == [0, 1]
    dev_texts = {text: label for text, label in SMALL_DEV}
    for event in dev["most_wrong"][1]:
        table = value(event).item().decode()
        if table.startswith("Every dev example"):
            continue
        rows = [line for line in table.splitlines()[2:]]
        assert 1 <= len(rows) <= len(SMALL_DEV)
        losses = []
        for row in rows:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            _, _, text, true, predicted, _, _, loss = cells
            assert dev_texts[text] == true
            assert predicted != true
            losses.append(float(loss))
        assert losses == sorted(losses, reverse=True)


def test_feedback_histograms(run_logs):
    _, logs = run_logs
    dev = read_events(os.path.join(logs, "validation"))
    weight_tags = [tag for tag in dev if tag.startswith("weights/")]
    # Two directions of five weights each: W, U, V and the two biases.
    assert len(weight_tags) == 10, weight_tags
    for tag in weight_tags + ["state_at_last_step/forward", "state_at_last_step/backward"]:
        assert steps_of(dev, tag, "histograms") == [0, 1], tag
    # Each histogram counts one value per dev example and state unit.
    buckets = value(dev["state_at_last_step/forward"][1][0])
    assert buckets[:, 2].sum() == len(SMALL_DEV) * 128


def test_hparams_session_and_final_metric(run_logs):
    workdir, logs = run_logs
    root = read_events(logs)
    name, tensors = root[hparams_metadata.SESSION_START_INFO_TAG]
    assert name == hparams_metadata.PLUGIN_NAME
    accumulator = event_accumulator.EventAccumulator(logs)
    accumulator.Reload()
    content = accumulator.SummaryMetadata(
        hparams_metadata.SESSION_START_INFO_TAG
    ).plugin_data.content
    session = hparams_metadata.parse_session_start_info_plugin_data(content)
    assert session.group_name == "tiny-run"
    assert session.hparams["model.backbone"].string_value == "tiny"
    assert session.hparams["training.batch_size"].number_value == 4
    assert session.hparams["strategy"].string_value == "MirroredStrategy"

    with open(os.path.join(workdir, "exported", "tiny-run", "metrics.json")) as file:
        metrics = json.load(file)
    final = float(value(root["final/dev_accuracy"][1][-1]))
    assert final == pytest.approx(metrics["accuracy"], rel=1e-6)
    assert root["final/dev_accuracy"][0] == "scalars"

    experiment = read_events(os.path.dirname(logs))
    assert experiment[hparams_metadata.EXPERIMENT_TAG][0] == hparams_metadata.PLUGIN_NAME


def test_profile_of_requested_batches(run_logs):
    _, logs = run_logs
    traces = glob.glob(os.path.join(logs, "train", "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1
    assert os.path.getsize(traces[0]) > 0


def test_most_wrong_markdown_escapes_cells():
    rows = [
        {
            "index": 0,
            "text": ("a | b", "line\nbreak"),
            "true": "pos",
            "predicted": "neg",
            "probability": 0.9,
            "true_probability": 0.1,
            "loss": 2.3,
        }
    ]
    table = most_wrong_markdown(rows)
    assert "a \\| b ⟂ line break" in table
    assert most_wrong_markdown([]).startswith("Every dev example")


def test_non_chief_callbacks_write_nothing(tmp_path, strategies, tiny_bundle):
    """Without a log directory the callbacks still set the dev logs but write no event file."""
    config = config_from_dict({"model": {"backbone": "tiny"}, "training": {"batch_size": 4}})
    texts, label_names = zip(*SMALL_TRAIN, strict=True)
    label_ids = [LABELS.index(label) for label in label_names]
    dev_texts = [text for text, _ in SMALL_DEV]
    dev_ids = [LABELS.index(label) for _, label in SMALL_DEV]
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 16)
    steps = math.ceil(len(texts) / 4)

    strategy = strategies[2]
    with strategy.scope():
        keras.utils.set_random_seed(0)
        bundle = load_backbone("tiny", seed=1)
        model = build_training_model(config, bundle.backbone, 2, total_steps=2 * steps)
    dev_data = make_dataset(dev_texts, dev_ids, preprocessor, 4)
    dev = DevEvaluation(
        dev_data, dev_ids, dev_texts, LABELS, log_dir=None, histogram_every_epochs=1
    )
    callbacks, _ = build_callbacks(
        log_dir=None,
        best_checkpoint=str(tmp_path / "run" / "checkpoints" / "best.weights.h5"),
        backup_dir=str(tmp_path / "run" / "backup"),
        log_every_steps=1,
        patience=2,
        steps_per_epoch=steps,
        epochs=2,
        backup_every_steps=100,
        dev_evaluation=dev,
        num_examples=len(texts),
        batch_size=4,
    )
    data = make_training_dataset(list(texts), label_ids, preprocessor, 4, 0, 0, 2)
    history = model.fit(
        data, epochs=2, steps_per_epoch=steps, callbacks=callbacks, verbose=0, shuffle=False
    )

    assert len(history.history["val_accuracy"]) == 2
    # The dev pass outside the replicas gives what Keras's distributed evaluation gives.
    evaluated = model.evaluate(dev_data, return_dict=True, verbose=0)
    probabilities = dev.predict()
    assert example_losses(probabilities, dev_ids).mean() == pytest.approx(
        evaluated["loss"], rel=1e-5
    )
    assert np.mean(probabilities.argmax(axis=1) == dev_ids) == evaluated["accuracy"]
    written = [
        os.path.relpath(os.path.join(root, name), tmp_path)
        for root, _, names in os.walk(tmp_path)
        for name in names
    ]
    assert not [path for path in written if "tfevents" in path], written


def experiment_events(log_root):
    found = []
    for path in sorted(glob.glob(os.path.join(log_root, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            found += [
                hparams_metadata.parse_experiment_plugin_data(v.metadata.plugin_data.content)
                for v in event.summary.value
                if v.tag == hparams_metadata.EXPERIMENT_TAG
            ]
    return found


def test_experiment_written_once_per_settings(tmp_path):
    values = hparam_values(config_from_dict({}), tf.distribute.get_strategy())
    # The settings runs most often differ in lead the dashboard's columns.
    assert list(values)[:3] == ["model.backbone", "data.sequence_length", "model.feedback_units"]
    root = tmp_path / "logs"
    write_hparams(str(root / "first"), values, "first")
    write_hparams(str(root / "second"), values, "second")
    assert len(experiment_events(root)) == 1

    write_hparams(str(root / "third"), {**values, "extra": 1}, "third")
    experiments = experiment_events(root)
    assert len(experiments) == 2
    assert [h.name for h in experiments[-1].hparam_infos][-1] == "extra"
