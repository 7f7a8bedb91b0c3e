"""Frozen and LoRA fine-tuning: what trains, and LoRA merged into saved models."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_backbone_without_dropout
from fnn_keras.backbones import TINY_CONFIG
from fnn_keras.config import config_from_dict
from fnn_keras.data.pipeline import build_preprocessor, make_dataset, make_training_dataset
from fnn_keras.models.classifier import build_classifier
from fnn_keras.models.fine_tuning import apply_fine_tuning, lora_layers, parameter_counts
from fnn_keras.training.optimization import build_optimizer
from fnn_keras.training.precision import float32_copy
from fnn_keras.training.train_model import TrainingModel

TEXTS = ["a good film", "the worst service", "great fun and i love it", "boring", "awful"]
LABELS = [1, 0, 1, 0, 0]


def build(fine_tune, lora_rank=4):
    # A backbone of its own: fine-tuning changes the backbone in place.
    backbone = tiny_backbone_without_dropout(5)
    classifier = build_classifier(
        backbone,
        num_labels=2,
        feedback_units=8,
        feedback_dropout=0.0,
        dropout=0.0,
        fine_tune=fine_tune,
        lora_rank=lora_rank,
    )
    return classifier, backbone


def fit(classifier, tiny_bundle, learning_rate, epochs=3):
    model = TrainingModel(classifier, keras.losses.SparseCategoricalCrossentropy(reduction=None))
    model.compile(build_optimizer(learning_rate, 100, warmup_ratio=0.0))
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 16)
    data = make_training_dataset(TEXTS, LABELS, preprocessor, 2, 0, 0, epochs)
    model.fit(data, epochs=epochs, steps_per_epoch=math.ceil(len(TEXTS) / 2), verbose=0)


def snapshot(layer):
    return [np.array(w) for w in layer.weights]


def test_frozen_trains_only_head(tiny_bundle):
    classifier, backbone = build("frozen")
    backbone_ids = {id(w) for w in backbone.weights}
    assert classifier.trainable_weights
    assert not any(id(w) in backbone_ids for w in classifier.trainable_weights)
    before_backbone = snapshot(backbone)
    before_head = snapshot(classifier.get_layer("probabilities"))

    fit(classifier, tiny_bundle, learning_rate=1e-2)
    for before, after in zip(before_backbone, snapshot(backbone), strict=True):
        np.testing.assert_array_equal(before, after)
    moved = [
        np.max(np.abs(a - b))
        for a, b in zip(before_head, snapshot(classifier.get_layer("probabilities")), strict=True)
    ]
    assert max(moved) > 1e-4
    counts = parameter_counts(classifier)
    assert counts["trainable"] == counts["total"] - sum(
        int(np.prod(w.shape)) for w in backbone.weights
    )


def test_lora_merges_into_plain_copy(tiny_bundle):
    rank = 4
    classifier, backbone = build("lora", lora_rank=rank)
    adapted = lora_layers(classifier)
    # keras-hub adapts the query and value projections of every layer.
    assert len(adapted) == 2 * TINY_CONFIG["num_layers"]
    # Each adapted projection trains its two factors and its bias (keras-hub
    # leaves the layer trainable and freezes only its kernel).
    expected = sorted(
        f"{layer.path}/{name}"
        for layer in adapted
        for name in ("lora_kernel_a", "lora_kernel_b", "bias")
    )
    assert sorted(w.path for w in backbone.trainable_weights) == expected
    base_kernels = [np.array(layer._kernel) for layer in adapted]

    fit(classifier, tiny_bundle, learning_rate=1e-2)
    for layer, base in zip(adapted, base_kernels, strict=True):
        # The base kernel stays frozen; the update lives in the factors.
        np.testing.assert_array_equal(np.array(layer._kernel), base)
        assert np.max(np.abs(np.array(layer.lora_kernel_b))) > 1e-4

    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 16)
    data = make_dataset(TEXTS, None, preprocessor, batch_size=5)
    trained = classifier.predict(data, verbose=0)

    merged = float32_copy(classifier)
    assert not lora_layers(merged)
    assert not any("lora" in w.path for w in merged.weights)
    plain, _ = build("full")
    assert [w.shape for w in merged.weights] == [w.shape for w in plain.weights]
    np.testing.assert_allclose(merged.predict(data, verbose=0), trained, atol=1e-5)

    # Each merged kernel is the base plus (alpha / rank) * a @ b.
    layer = adapted[0]
    expected = base_kernels[0] + (layer.lora_alpha / rank) * np.matmul(
        np.array(layer.lora_kernel_a), np.array(layer.lora_kernel_b)
    )
    merged_kernel = {w.path: w for w in merged.weights}[layer._kernel.path]
    np.testing.assert_allclose(np.array(merged_kernel), expected, atol=1e-6)


def test_fine_tuning_rejects_unknown_method(tiny_bundle):
    with pytest.raises(ValueError, match="Received: method='partial'"):
        apply_fine_tuning(tiny_bundle.backbone, "partial")


def test_lora_run_exports_merged_weights(small_data, tmp_path):
    """A LoRA run's SavedModel has no LoRA variables and matches the trained model."""
    from fnn_keras.export.exporter import export_run
    from fnn_keras.export.trained_run import load_trained_run, read_run_examples
    from fnn_keras.training import trainer

    train, dev = small_data
    export_dir = tmp_path / "exported"
    config = config_from_dict(
        {
            "data": {"train": train, "dev": dev},
            "model": {"backbone": "tiny", "fine_tune": "lora", "lora_rank": 4},
            "training": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3},
            "output": {
                "run_name": "lora",
                "export": False,
                "summaries": False,
                "log_dir": str(tmp_path / "logs"),
                "export_dir": str(export_dir),
            },
        }
    )
    result = trainer.train(config, verbose=0)
    metrics = result.metrics
    # The trainer compares the saved (merged) model with the model as trained.
    assert metrics["lora_merge_max_abs_difference"] <= 1e-5
    assert metrics["parameters"]["trainable"] < metrics["parameters"]["total"]

    run = load_trained_run("lora", str(export_dir))
    examples, label_ids = read_run_examples(run, dev)
    report = export_run(run, examples.inputs, label_ids, formats=("saved_model",))
    assert not report["failed"], report
    parity = [entry for entry in report["artifacts"] if entry["format"] == "saved_model"]
    assert parity
    assert all(entry["parity"]["max_abs_diff"] <= 1e-5 for entry in parity)

    loaded = tf.saved_model.load(parity[0]["path"])
    names = [variable.name for variable in loaded.variables]
    assert names
    assert not [name for name in names if "lora" in name]


class InterruptAfterEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


def test_lora_resume_matches_whole_run(small_data, tmp_path, monkeypatch):
    """A resumed LoRA run keeps its factors: Keras's weight files alone reset them to zero."""
    from fnn_keras.training import trainer

    train, dev = small_data

    def config(name):
        return config_from_dict(
            {
                "data": {"train": train, "dev": dev},
                "model": {"backbone": "tiny", "fine_tune": "lora", "lora_rank": 4},
                "training": {
                    "epochs": 2,
                    "batch_size": 4,
                    "learning_rate": 5e-3,
                    "early_stopping_patience": 5,
                    "deterministic": True,
                },
                "output": {
                    "run_name": name,
                    "export": False,
                    "summaries": False,
                    "log_dir": str(tmp_path / "logs"),
                    "export_dir": str(tmp_path / "exported"),
                },
            }
        )

    whole = trainer.train(config("whole"), verbose=0)

    build_callbacks = trainer.build_callbacks

    def callbacks_with_interrupt(**kwargs):
        callbacks, backup = build_callbacks(**kwargs)
        return callbacks + [InterruptAfterEpoch()], backup

    monkeypatch.setattr(trainer, "build_callbacks", callbacks_with_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config("resumed"), verbose=0)
    backup = tmp_path / "exported" / "resumed" / "backup"
    assert sorted(path.suffix for path in backup.glob("step-*")) == [".h5", ".npz"]
    monkeypatch.setattr(trainer, "build_callbacks", build_callbacks)
    resumed = trainer.train(config("resumed"), verbose=0)
    assert resumed.resumed_at is not None
    assert resumed.resumed_at > 0

    assert resumed.weights_digest == whole.weights_digest
    models = [
        keras.saving.load_model(tmp_path / "exported" / name / "model.keras", compile=False)
        for name in ("whole", "resumed")
    ]
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
