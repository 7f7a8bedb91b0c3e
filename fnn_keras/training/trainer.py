"""One training run: read data, build under the strategy, fit, evaluate, save."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from fnn_keras.backbones import BackboneError, load_backbone, save_tokenizer
from fnn_keras.config import Config, ConfigError, save_config
from fnn_keras.data.labels import LabelVocabulary
from fnn_keras.data.pipeline import build_preprocessor, make_dataset
from fnn_keras.data.readers import Examples, demo_data_paths, read_examples
from fnn_keras.data.summary import log_summary, summarize_split
from fnn_keras.evaluation.metrics import classification_metrics
from fnn_keras.evaluation.report import write_report
from fnn_keras.export.exporter import export_run
from fnn_keras.export.parity import keras_probabilities
from fnn_keras.export.trained_run import load_trained_run
from fnn_keras.layout import RunPaths, run_paths
from fnn_keras.models.classifier import build_classifier
from fnn_keras.training.callbacks import build_callbacks
from fnn_keras.training.optimization import build_optimizer
from fnn_keras.training.strategy import build_strategy

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
    """Outputs of a finished run.

    Attributes:
        paths: Where the run wrote.
        metrics: Dev metrics from `classification_metrics`.
        export_report: The report of `export_run`, or `None` without export.
        train_seconds: Wall time of `fit`.
        epochs_run: Epochs completed before early stopping.
    """

    paths: RunPaths
    metrics: dict
    export_report: dict | None
    train_seconds: float
    epochs_run: int


def new_run_name(export_dir: str, log_dir: str) -> str:
    """Return a timestamped run name that no earlier run uses."""
    base = "run-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name, suffix = base, 1
    while os.path.exists(os.path.join(export_dir, name)) or os.path.exists(
        os.path.join(log_dir, name)
    ):
        suffix += 1
        name = f"{base}-{suffix}"
    return name


def _check_run_is_new(paths: RunPaths) -> None:
    """Refuse to overwrite a finished run.

    A run directory without `model.keras` belongs to an interrupted run with
    the same name, which this run resumes from its `BackupAndRestore` backup.
    """
    if os.path.exists(paths.model):
        raise ConfigError(
            f"Run {paths.run_name!r} already exists in {paths.run_dir}; pass "
            "another --run-name, or omit it for a new timestamped name."
        )


def learning_rate_multipliers(
    model: keras.Model, backbone: keras.Model, head_multiplier: float, layer_decay: float
) -> dict[str, float]:
    """Map variable path prefixes to learning-rate factors.

    Layers outside the backbone (feedback layer, head) get `head_multiplier`.
    With `layer_decay < 1`, backbone transformer layer `i` of `n` gets
    `layer_decay ** (n - 1 - i)` and the embedding layers `layer_decay ** n`.
    """
    multipliers = {
        f"{layer.name}/": head_multiplier
        for layer in model.layers
        if layer is not backbone and layer.weights
    }
    if layer_decay < 1:
        depth = backbone.num_layers
        for layer in backbone.layers:
            if not layer.weights or layer.name == "pooled_dense":
                continue
            if layer.name.startswith("transformer_layer_"):
                index = int(layer.name.rsplit("_", 1)[1])
                multipliers[f"{layer.name}/"] = layer_decay ** (depth - 1 - index)
            else:
                multipliers[f"{layer.name}/"] = layer_decay**depth
    return multipliers


def read_splits(config: Config) -> tuple[Examples, Examples]:
    """Read the train and dev splits named in the config, or the demo data."""
    train_path, dev_path = config.data.train, config.data.dev
    if train_path is None:
        train_path, dev_path = demo_data_paths()
        logger.info("No --train/--dev given: using the demo data in %s", train_path)
    train = read_examples(train_path, config.data.text_column, config.data.label_column)
    dev = read_examples(dev_path, config.data.text_column, config.data.label_column)
    limit = config.data.max_train_examples
    if limit is not None and limit < len(train):
        logger.info("Keeping the first %d of %d training examples.", limit, len(train))
        train = train.head(limit)
    return train, dev


def train(
    config: Config,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | str = "auto",
) -> RunResult:
    """Run training end to end: data, model, fit, evaluation and export.

    The model, optimizer and metrics are built under `strategy.scope()`.
    Outputs go to `run_paths(config.output, run_name)`: the resolved config,
    labels, data summary, best checkpoint, final `.keras` model,
    `metrics.json`, `report.md` and, unless disabled, a SavedModel version.

    Args:
        config: A validated `Config`.
        strategy: Distribution strategy; `None` builds a `MirroredStrategy`
            over the local GPUs, or the CPU.
        verbose: Verbosity of `model.fit` (0, 1, 2 or `"auto"`).

    Returns:
        A `RunResult`.

    Raises:
        ConfigError, DataError, LabelError, BackboneError: Invalid input.

    Example:

    ```python
    config = config_from_dict({"model": {"backbone": "tiny"}})
    result = train(config)
    result.metrics["accuracy"]
    ```
    """
    keras.utils.set_random_seed(config.training.seed)

    # === Data ===
    train_examples, dev_examples = read_splits(config)
    labels = LabelVocabulary.from_labels(train_examples.labels)
    if len(labels) < 2:
        raise ConfigError(
            f"{train_examples.path}: training needs at least 2 distinct labels. "
            f"Found: {', '.join(labels.labels)}."
        )
    labels.check(dev_examples.labels, dev_examples.path)

    run_name = config.output.run_name or new_run_name(
        config.output.export_dir, config.output.log_dir
    )
    paths = run_paths(config.output, run_name)
    _check_run_is_new(paths)
    config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, run_name=run_name)
    )

    # === Model, under the strategy ===
    strategy = strategy or build_strategy()
    batch_size = config.training.batch_size
    steps_per_epoch = math.ceil(len(train_examples) / batch_size)
    total_steps = steps_per_epoch * config.training.epochs
    with strategy.scope():
        bundle = load_backbone(config.model.backbone, seed=config.training.seed)
        if config.data.sequence_length > bundle.max_sequence_length:
            raise BackboneError(
                f"sequence_length={config.data.sequence_length} exceeds the "
                f"backbone's {bundle.max_sequence_length} positions; pass "
                f"--sequence-length {bundle.max_sequence_length} or less."
            )
        model = build_classifier(
            bundle.backbone,
            num_labels=len(labels),
            feedback_units=config.model.feedback_units,
            feedback_steps=config.model.feedback_steps,
            bidirectional=config.model.bidirectional,
            feedback_dropout=config.model.feedback_dropout,
            dropout=config.model.dropout,
            seed=config.training.seed,
            pooling=config.model.pooling,
        )
        optimizer = build_optimizer(
            config.training.learning_rate,
            total_steps,
            warmup_ratio=config.training.warmup_ratio,
            weight_decay=config.training.weight_decay,
            learning_rate_multipliers=learning_rate_multipliers(
                model,
                bundle.backbone,
                config.training.head_learning_rate_multiplier,
                config.training.layer_decay,
            ),
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    os.makedirs(paths.run_dir, exist_ok=True)
    os.makedirs(paths.log_dir, exist_ok=True)
    save_config(config, paths.config)
    labels.save(paths.labels)

    # === Input pipelines ===
    preprocessor = build_preprocessor(bundle.tokenizer, config.data.sequence_length)
    summary = {}
    for name, examples in (("train", train_examples), ("dev", dev_examples)):
        summary[name] = summarize_split(examples, bundle.tokenizer, config.data.sequence_length)
        log_summary(name, summary[name], config.data.sequence_length)
    with open(paths.data_summary, "w", encoding="utf-8") as file:
        json.dump(summary, file, ensure_ascii=False, indent=2)

    train_data = make_dataset(
        train_examples.texts,
        labels.encode(train_examples.labels),
        preprocessor,
        batch_size,
        shuffle=True,
        seed=config.training.seed,
    )
    dev_label_ids = labels.encode(dev_examples.labels)
    dev_data = make_dataset(dev_examples.texts, dev_label_ids, preprocessor, batch_size)

    # === Fit ===
    callbacks = build_callbacks(
        log_dir=paths.log_dir,
        best_checkpoint=paths.best_checkpoint,
        backup_dir=paths.backup,
        log_every_steps=config.training.log_every_steps,
        patience=config.training.early_stopping_patience,
    )
    start = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=dev_data,
        epochs=config.training.epochs,
        callbacks=callbacks,
        verbose=verbose,
        # The training dataset reshuffles itself every epoch.
        shuffle=False,
    )
    train_seconds = time.perf_counter() - start
    # Training ended normally, so the backup for resuming is no longer needed.
    shutil.rmtree(paths.backup, ignore_errors=True)
    logger.info("Training took %.1f s", train_seconds)

    # === Evaluate and save ===
    probabilities = keras_probabilities(model, preprocessor, dev_examples.texts, batch_size)
    predicted = np.argmax(probabilities, axis=-1)
    metrics = classification_metrics(np.array(dev_label_ids), predicted, labels.labels)
    metrics["split"] = dev_examples.path
    metrics["train_seconds"] = round(train_seconds, 1)
    write_report(metrics, paths.run_dir, title=f"Dev evaluation of run {run_name}")

    model.save(paths.model)
    save_tokenizer(bundle.tokenizer, paths.tokenizer, config.data.sequence_length)
    export_report = None
    if config.output.export:
        # Export from the saved file: a SavedModel cannot hold the mirrored
        # variables the strategy created, and this exports exactly what
        # `model.keras` holds.
        run = load_trained_run(paths.run_dir)
        export_report = export_run(
            run,
            dev_examples.texts,
            dev_label_ids,
            calibration_texts=train_examples.texts,
        )
    return RunResult(
        paths=paths,
        metrics=metrics,
        export_report=export_report,
        train_seconds=train_seconds,
        epochs_run=len(history.history.get("loss", [])),
    )
