"""One training run: read data, build under the strategy, fit, evaluate, save."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from fnn_keras.backbones import backbone_max_positions, load_backbone
from fnn_keras.config import (
    Config,
    ConfigError,
    inactive_settings,
    parse_profile_batches,
    save_config,
)
from fnn_keras.data.labels import build_vocabulary, class_weights
from fnn_keras.data.multilabel import (
    DEFAULT_THRESHOLD,
    multi_hot,
    save_label_thresholds,
    split_label_sets,
    tune_label_thresholds,
)
from fnn_keras.data.pipeline import build_preprocessor, make_dataset, make_training_dataset
from fnn_keras.data.readers import Examples, demo_data_paths, read_examples
from fnn_keras.data.summary import (
    log_summary,
    shared_texts,
    summarize_split,
    summary_markdown,
    token_lengths,
)
from fnn_keras.data.thresholds import save_thresholds, tune_binary_threshold
from fnn_keras.evaluation.metrics import evaluation_metrics
from fnn_keras.evaluation.multilabel import multilabel_metrics, write_multilabel_report
from fnn_keras.evaluation.report import write_report
from fnn_keras.export.exporter import export_run
from fnn_keras.export.parity import keras_probabilities
from fnn_keras.export.trained_run import load_trained_run
from fnn_keras.layout import RunPaths, run_paths
from fnn_keras.models.fine_tuning import check_lora_rank, lora_layers, parameter_counts
from fnn_keras.tokenizer import save_tokenizer
from fnn_keras.training.callbacks import NonFiniteLossError, build_callbacks, read_backup
from fnn_keras.training.multilabel_summaries import MultilabelDevEvaluation
from fnn_keras.training.precision import (
    float32_copy,
    precision_policy,
    resolve_mixed_precision,
)
from fnn_keras.training.strategy import (
    StrategyError,
    build_strategy,
    is_chief,
    is_multi_worker,
    split_cpu,
)
from fnn_keras.training.summaries import (
    DevEvaluation,
    default_histogram_every_epochs,
    hparam_values,
    write_final_metrics,
    write_hparams,
)
from fnn_keras.training.train_model import build_training_model

logger = logging.getLogger(__name__)

XLA_LENGTH_MULTIPLE = 16


@dataclasses.dataclass
class RunResult:
    """Outputs of a finished run.

    Attributes:
        paths: Where the run wrote.
        metrics: Dev metrics from `classification_metrics`.
        export_report: The report of `export_run`, or `None` without export.
        train_seconds: Wall time of `fit`.
        epochs_run: Epochs this process trained (a resumed run counts only
            its own), up to early stopping.
        steps_run: Optimizer steps this process trained.
        resumed_at: The step a backup resumed this run at, or `None`.
        weights_digest: SHA-256 prefix of the final weights; every worker
            of a multi-worker run prints it, and they must agree.
        chief: Whether this process wrote the outputs. A non-chief worker
            of a multi-worker cluster writes nothing; its `metrics` are
            empty.
    """

    paths: RunPaths
    metrics: dict
    export_report: dict | None
    train_seconds: float
    epochs_run: int
    steps_run: int = 0
    resumed_at: int | None = None
    weights_digest: str = ""
    chief: bool = True


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
    the same name, which this run resumes from its `TrainingBackup`.
    """
    if os.path.exists(paths.model):
        raise ConfigError(
            f"Run {paths.run_name!r} already exists in {paths.run_dir}; pass "
            "another --run-name, or omit it for a new timestamped name."
        )


def read_splits(config: Config) -> tuple[Examples, Examples]:
    """Read the train and dev splits named in the config, or the demo data."""
    data = config.data
    train_path, dev_path = data.train, data.dev
    if train_path is None:
        train_path, dev_path = demo_data_paths()
        logger.info("No --train/--dev given: using the demo data in %s", train_path)
    options = dict(
        text_pair_column=data.text_pair_column,
        encoding=data.encoding,
        on_bad_row=data.on_bad_row,
    )
    train = read_examples(train_path, data.text_column, data.label_column, **options)
    dev = read_examples(dev_path, data.text_column, data.label_column, **options)
    limit = data.max_train_examples
    if limit is not None and limit < len(train):
        logger.info("Keeping the first %d of %d training examples.", limit, len(train))
        dropped = len(train) - limit
        train = train.head(limit)
        train.skipped["beyond --max-train-examples"] = dropped
    return train, dev


def _write_summary_text(log_dir: str, summary: dict) -> None:
    """Write the data summary to TensorBoard's Text tab, under `data/`."""
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "data"))
    with writer.as_default():
        tf.summary.text("data_summary", summary_markdown(summary), step=0)
    writer.close()


def _sequence_length_message(sequence_length: int, max_positions: int) -> str:
    return (
        f"sequence_length={sequence_length} exceeds the backbone's {max_positions} "
        f"positions; pass --sequence-length {max_positions} or less."
    )


def weights_digest(model: keras.Model) -> str:
    """Return the first 16 hex digits of the SHA-256 of the model's weights."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def resolve_jit_compile(setting: str, deterministic: bool) -> bool:
    """Turn `training.jit_compile` into a bool: `auto` is on with GPUs, unless deterministic."""
    if setting == "auto":
        return bool(tf.config.list_logical_devices("GPU")) and not deterministic
    return setting == "on"


def _epoch_phases(state, epochs: int) -> list[tuple[int, int, int]]:
    """Split the epochs left into `fit` calls of `(first, end, skip_batches)`.

    A run resumed inside an epoch first finishes that epoch (its batches
    after the saved step), then runs the remaining whole epochs.
    """
    if state is None:
        return [(0, epochs, 0)]
    if state.early_stopping.get("stopped_epoch", 0) > 0:
        return []
    phases = []
    first = state.epoch
    if state.step_in_epoch and first < epochs:
        phases.append((first, first + 1, state.step_in_epoch))
        first += 1
    if first < epochs:
        phases.append((first, epochs, 0))
    return phases


def train(
    config: Config,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | str = "auto",
    tf_config: str | None = None,
) -> RunResult:
    """Run training end to end: data, model, fit, evaluation and export.

    The model, optimizer and metrics are built under `strategy.scope()`.
    Outputs go to `run_paths(config.output, run_name)`: the resolved config,
    labels, data summary, best checkpoint, final `.keras` model,
    `metrics.json`, `report.md` and, unless disabled, a SavedModel version.

    `batch_size` is the global batch: each of N replicas takes an equal
    share of it (the final batch of an epoch splits as evenly as it can),
    and the loss is the mean over the whole batch, so the learning rate
    needs no change with N. When the run directory contains a backup of an
    interrupted run with the same name, training resumes at its step. In a
    multi-worker cluster only the chief writes; other workers train in
    temporary directories that they remove.

    Args:
        config: A validated `Config`.
        strategy: Distribution strategy; `None` builds the one that
            `config.training.strategy` names. Build it before any other
            TensorFlow op runs.
        verbose: Verbosity of `model.fit` (0, 1, 2 or `"auto"`).
        tf_config: The value of `TF_CONFIG`, for the `auto` and
            `multi_worker` strategies.

    Returns:
        A `RunResult`.

    Raises:
        ConfigError, DataError, LabelError, BackboneError: Invalid input.
        NonFiniteLossError: The loss became NaN or infinite; the backup of
            the last good step and the best checkpoint are kept.

    Example:

    ```python
    config = config_from_dict({"model": {"backbone": "tiny"}})
    result = train(config)
    result.metrics["accuracy"]
    ```
    """
    training = config.training
    max_positions = backbone_max_positions(config.model.backbone)
    if max_positions is not None and config.data.sequence_length > max_positions:
        raise ConfigError(_sequence_length_message(config.data.sequence_length, max_positions))
    if strategy is None:
        try:
            devices = split_cpu(training.cpu_devices) if training.cpu_devices else None
            strategy = build_strategy(training.strategy, devices=devices, tf_config=tf_config)
        except StrategyError as error:
            raise ConfigError(str(error)) from None
    keras.utils.set_random_seed(training.seed)
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.data.task == "tagging":
        # Imported here because `tagging` imports this module.
        from fnn_keras.training.tagging import train_tagging

        return train_tagging(config, strategy, verbose)
    chief = is_chief(strategy)

    # === Data ===
    train_examples, dev_examples = read_splits(config)
    multilabel = config.data.task == "multilabel"
    if multilabel:
        delimiter = config.data.label_delimiter
        train_sets = split_label_sets(
            train_examples.labels, delimiter, train_examples.path, train_examples.lines
        )
        dev_sets = split_label_sets(
            dev_examples.labels, delimiter, dev_examples.path, dev_examples.lines
        )
        labels = build_vocabulary(
            [label for labels in train_sets for label in labels],
            [label for labels in dev_sets for label in labels],
            config.data.labels,
            train_examples.path,
            dev_examples.path,
        )
        targets = (multi_hot(train_sets, labels), multi_hot(dev_sets, labels))
    else:
        labels = build_vocabulary(
            train_examples.labels,
            dev_examples.labels,
            config.data.labels,
            train_examples.path,
            dev_examples.path,
        )
        targets = None

    if training.tune_thresholds and not multilabel and len(labels) != 2:
        raise ConfigError(
            f"--tune-thresholds needs a binary task; the data has {len(labels)} labels "
            f"({', '.join(labels.labels)}). Drop --tune-thresholds."
        )
    if training.tune_thresholds and not multilabel and len(set(dev_examples.labels)) < 2:
        raise ConfigError(
            f"{dev_examples.path}: --tune-thresholds needs dev examples of both labels; the "
            f"dev data has only {sorted(set(dev_examples.labels))}. Add dev rows of the "
            "other label or drop --tune-thresholds."
        )

    run_name = config.output.run_name or new_run_name(
        config.output.export_dir, config.output.log_dir
    )
    paths = run_paths(config.output, run_name)
    if chief:
        _check_run_is_new(paths)
    config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, run_name=run_name)
    )
    # Non-chief workers write checkpoints and logs to a directory they
    # remove at the end; they read the chief's backup to resume.
    worker_dir = None
    own = paths
    if not chief:
        worker_dir = tempfile.mkdtemp(prefix="fnn_keras-worker-")
        worker_output = dataclasses.replace(
            config.output,
            export_dir=os.path.join(worker_dir, "exported"),
            log_dir=os.path.join(worker_dir, "logs"),
        )
        own = run_paths(worker_output, run_name)
    try:
        return _train_run(
            config,
            strategy,
            verbose,
            chief,
            paths,
            own,
            train_examples,
            dev_examples,
            labels,
            targets,
        )
    finally:
        if worker_dir is not None:
            shutil.rmtree(worker_dir, ignore_errors=True)


# Settings a resumed run may change. The learning rate is among them, so a
# run stopped by a NaN loss can go on at a lower rate. The others alter
# neither the data order nor the result beyond float rounding.
RESUMABLE_CHANGES = frozenset(
    {
        "training.learning_rate",
        "training.backup_every_steps",
        "training.log_every_steps",
        "training.strategy",
        "training.cpu_devices",
        "training.jit_compile",
        "training.mixed_precision",
        "training.deterministic",
    }
)


def resume_settings(config: Config) -> dict:
    """Return the `section.key` settings that a resumed run must keep.

    Settings without effect in the run's mode, such as the LoRA rank of a
    full fine-tuning run, are left out.
    """
    values = config.to_dict()
    inactive = set(inactive_settings(config))
    return {
        f"{section}.{key}": value
        for section in ("data", "model", "training")
        for key, value in values[section].items()
        if f"{section}.{key}" not in RESUMABLE_CHANGES | inactive
    }


def _check_resumable(state, settings: dict, total_steps: int, backup_dir: str) -> None:
    """Raise `ConfigError` unless this run can continue from `state`."""
    changed = [
        f"{key}={state.settings.get(key)!r} (now {value!r})"
        for key, value in settings.items()
        if state.settings.get(key) != value
    ]
    if changed:
        raise ConfigError(
            f"the backup in {backup_dir} was written with other settings: "
            f"{', '.join(changed)}. Rerun with the settings the run started with, or "
            "delete the backup to train from the start."
        )
    if state.global_step > total_steps:
        raise ConfigError(
            f"the backup in {backup_dir} is at step {state.global_step}, past the "
            f"{total_steps} steps this run has in all; rerun with the settings the run "
            "started with, or delete the backup to train from the start."
        )


def _check_workers_agree(strategy, step: int, backup_dir: str) -> None:
    """Stop every worker unless all of them resume from the same step.

    A worker that cannot see the chief's backup would start from step 0
    while the others resume, and the cluster would hang at its first
    all-reduce. `step` is -1 for a backup this worker cannot use.
    """
    local = tf.constant([step], tf.int64)
    steps = strategy.gather(strategy.run(lambda: tf.identity(local)), axis=0).numpy()
    if steps.min() != steps.max():
        here = "an unusable backup" if step < 0 else f"backup step {step}"
        raise ConfigError(
            f"workers disagree on where to resume: {here} here, steps "
            f"{sorted(set(steps.tolist()))} across the cluster (-1: unusable backup). Put "
            f"--export-dir on storage that every worker reads, or delete {backup_dir} on every "
            "worker to start over."
        )


def _multilabel_evaluation(probabilities, targets, labels, tune, paths, dev_examples) -> dict:
    """Pick the per-label thresholds, save them, and score the dev set with them."""
    thresholds = [DEFAULT_THRESHOLD] * len(labels)
    tuned_on = None
    if tune:
        tuned = tune_label_thresholds(probabilities, targets)
        thresholds = [row["threshold"] for row in tuned]
        tuned_on = dev_examples.path
        for label, row in zip(labels, tuned, strict=True):
            logger.info(
                "Threshold for %r: %.4f (dev F1 %.4f, against %.4f at 0.5)",
                label,
                row["threshold"],
                row["f1"],
                row["default_f1"],
            )
    save_label_thresholds(paths.run_dir, labels, thresholds, tuned_on)
    return multilabel_metrics(probabilities, targets, labels, thresholds, dev_examples.path)


def _train_run(
    config, strategy, verbose, chief, paths, own, train_examples, dev_examples, labels, targets
):
    """Train, evaluate and save; `targets` are the multi-hot rows of a multi-label run, or `None`."""
    training = config.training
    multilabel = targets is not None
    batch_size = training.batch_size
    steps_per_epoch = math.ceil(len(train_examples) / batch_size)
    total_steps = steps_per_epoch * training.epochs
    settings = resume_settings(config)
    problem = None
    try:
        state = read_backup(paths.backup)
        if state is not None:
            _check_resumable(state, settings, total_steps, paths.backup)
    except (ValueError, ConfigError) as error:
        state, problem = None, str(error)
    if is_multi_worker(strategy):
        # Every worker takes part before any of them stops, or the others
        # would wait for it at their first all-reduce.
        step = state.global_step if state else 0
        if problem:
            step = -1
        _check_workers_agree(strategy, step, paths.backup)
    if problem:
        raise ConfigError(problem)
    replicas = strategy.num_replicas_in_sync
    logger.info(
        "Global batch %d over %d replica(s): about %d examples per replica per step",
        batch_size,
        replicas,
        math.ceil(batch_size / replicas),
    )

    weights = class_weights(training.class_weight, labels, train_examples.labels)
    if training.class_weight != "none":
        logger.info(
            "Class weights: %s",
            ", ".join(f"{label}={w:.4g}" for label, w in zip(labels.labels, weights, strict=True)),
        )

    # === Model, under the strategy ===
    jit_compile = resolve_jit_compile(training.jit_compile, training.deterministic)
    mixed_precision = resolve_mixed_precision(training.mixed_precision)
    with strategy.scope(), precision_policy(mixed_precision):
        bundle = load_backbone(
            config.model.backbone, seed=training.seed, dropout=config.model.backbone_dropout
        )
        if config.model.fine_tune == "lora":
            try:
                check_lora_rank(bundle.backbone, config.model.lora_rank)
            except ValueError as error:
                raise ConfigError(f"model.lora_rank (--lora-rank): {error}") from None
        if config.data.sequence_length > bundle.max_sequence_length:
            raise ConfigError(
                _sequence_length_message(config.data.sequence_length, bundle.max_sequence_length)
            )
        model = build_training_model(
            config,
            bundle.backbone,
            len(labels),
            total_steps,
            jit_compile,
            class_weights=weights,
        )
        classifier = model.classifier
    parameters = parameter_counts(classifier)
    logger.info(
        "Fine-tuning %s%s: %d of %d parameters trainable",
        config.model.fine_tune,
        f" (rank {config.model.lora_rank})" if config.model.fine_tune == "lora" else "",
        parameters["trainable"],
        parameters["total"],
    )
    logger.info(
        "Training with %s compute, XLA %s",
        mixed_precision if mixed_precision != "off" else "float32",
        "on" if jit_compile else "off",
    )

    os.makedirs(own.run_dir, exist_ok=True)
    os.makedirs(own.log_dir, exist_ok=True)
    save_config(config, own.config)
    labels.save(own.labels)

    # === Input pipelines ===
    preprocessor = build_preprocessor(bundle.tokenizer, config.data.sequence_length)
    # The train lengths also drive bucketing, so the texts are tokenized once.
    # `Examples.inputs` builds pair tuples on each access, so take them once.
    train_inputs, dev_inputs = train_examples.inputs, dev_examples.inputs
    train_lengths = token_lengths(bundle.tokenizer, train_inputs)
    summary = {}
    for name, examples, lengths in (
        ("train", train_examples, train_lengths),
        ("dev", dev_examples, None),
    ):
        summary[name] = summarize_split(
            examples,
            bundle.tokenizer,
            config.data.sequence_length,
            lengths,
            max_positions=bundle.max_sequence_length,
        )
        log_summary(name, summary[name])
    summary["dev_texts_in_train"] = shared_texts(train_inputs, dev_inputs)
    if summary["dev_texts_in_train"]:
        logger.warning(
            "%d dev example(s) have a text that is also in the training data.",
            summary["dev_texts_in_train"],
        )
    if not multilabel:
        summary["class_weights"] = dict(zip(labels.labels, weights, strict=True))
    else:
        for name, rows in zip(("train", "dev"), targets, strict=True):
            counts = rows.sum(axis=0).astype(int).tolist()
            summary[name]["examples_per_label"] = dict(zip(labels.labels, counts, strict=True))
            mean = float(np.mean(rows.sum(axis=1), dtype=np.float64)) if len(rows) else 0.0
            summary[name]["labels_per_example"] = round(mean, 4)
            logger.info(
                "%s: examples per label %s; %.2f labels per example",
                name,
                summary[name]["examples_per_label"],
                summary[name]["labels_per_example"],
            )
    with open(own.data_summary, "w", encoding="utf-8") as file:
        json.dump(summary, file, ensure_ascii=False, indent=2)
    # Only the chief writes summaries; other workers keep their logs empty.
    log_dir = own.log_dir if chief else None
    summaries = chief and config.output.summaries
    # A resumed run wrote these when it started.
    if log_dir is not None and state is None:
        _write_summary_text(log_dir, summary)
    if summaries and state is None:
        write_hparams(log_dir, hparam_values(config, strategy), paths.run_name)
    if multilabel:
        train_label_ids, dev_label_ids = targets
    else:
        train_label_ids = labels.encode(train_examples.labels)
        dev_label_ids = labels.encode(dev_examples.labels)
    # XLA compiles once per input shape; lengths rounded up to a multiple of
    # XLA_LENGTH_MULTIPLE leave a few shapes instead of one per length.
    pad_to_multiple = XLA_LENGTH_MULTIPLE if jit_compile else 1
    dev_data = make_dataset(dev_inputs, dev_label_ids, preprocessor, batch_size, pad_to_multiple)
    histogram_every = config.output.histogram_every_epochs
    if histogram_every is None:
        histogram_every = default_histogram_every_epochs(classifier)
    if multilabel:
        dev_evaluation = MultilabelDevEvaluation(
            dev_data,
            dev_label_ids,
            dev_inputs,
            labels.labels,
            log_dir=log_dir if summaries else None,
            histogram_every_epochs=histogram_every,
            jit_compile=jit_compile,
        )
    else:
        dev_evaluation = DevEvaluation(
            dev_data,
            dev_label_ids,
            dev_inputs,
            labels.labels,
            log_dir=log_dir if summaries else None,
            most_wrong_count=config.output.most_wrong_examples,
            histogram_every_epochs=histogram_every,
            jit_compile=jit_compile,
        )
    profile = config.output.profile_batches
    profile_batches = None if profile is None else parse_profile_batches(profile)
    if profile_batches is not None and profile_batches[0] > total_steps:
        logger.warning(
            "--profile-batches %s starts after the run's last batch (%d); nothing will be profiled.",
            profile,
            total_steps,
        )

    # === Fit, resuming from a backup if there is one ===
    callbacks, backup = build_callbacks(
        log_dir=log_dir,
        best_checkpoint=own.best_checkpoint,
        backup_dir=own.backup,
        log_every_steps=training.log_every_steps,
        patience=training.early_stopping_patience,
        steps_per_epoch=steps_per_epoch,
        epochs=training.epochs,
        backup_every_steps=training.backup_every_steps,
        dev_evaluation=dev_evaluation,
        num_examples=len(train_examples),
        batch_size=batch_size,
        settings=settings,
        profile_batches=profile_batches,
        monitor="val_micro_f1" if multilabel else "val_accuracy",
    )
    if state is not None:
        with strategy.scope():
            try:
                backup.restore(model, state)
            except ValueError as error:
                raise ConfigError(str(error)) from None
    phases = _epoch_phases(state, training.epochs)
    epochs_run = 0
    first_step = state.global_step if state else 0
    start = time.perf_counter()
    try:
        for first, end, skip in phases:
            data = make_training_dataset(
                train_inputs,
                train_label_ids,
                preprocessor,
                batch_size,
                seed=training.seed,
                first_epoch=first,
                end_epoch=end,
                skip_batches=skip,
                lengths=train_lengths if config.data.bucket_by_length else None,
                pad_to_multiple=pad_to_multiple,
            )
            # `dev_evaluation` evaluates on the dev data at each epoch end.
            history = model.fit(
                data,
                initial_epoch=first,
                epochs=end,
                steps_per_epoch=steps_per_epoch - skip,
                callbacks=callbacks,
                verbose=verbose,
                # The batches come in `epoch_order` already.
                shuffle=False,
            )
            epochs_run += len(history.history.get("loss", []))
            if model.stop_training:
                break
    except NonFiniteLossError as error:
        kept = read_backup(own.backup)
        where = (
            f"the backup of step {kept.global_step} in {own.backup} is kept"
            if kept
            else "no backup was written yet"
        )
        raise NonFiniteLossError(
            f"{error}; training stopped and {where}. Lower --learning-rate or check the data.",
            error.step,
        ) from None
    if not phases and backup.early_stopping.best_weights is not None:
        # The backup is of a run that had already finished training.
        model.set_weights(backup.early_stopping.best_weights)
    train_seconds = time.perf_counter() - start
    digest = weights_digest(classifier)
    logger.info("Training took %.1f s; weights digest %s", train_seconds, digest)
    progress = dict(
        train_seconds=train_seconds,
        epochs_run=epochs_run,
        steps_run=int(keras.ops.convert_to_numpy(model.optimizer.iterations)) - first_step,
        resumed_at=state.global_step if state else None,
        weights_digest=digest,
    )
    if not chief:
        return RunResult(paths, {}, None, chief=False, **progress)
    # Training ended normally, so the backup for resuming is no longer needed.
    shutil.rmtree(paths.backup, ignore_errors=True)

    # === Evaluate and save, in float32 and outside the strategy ===
    final = float32_copy(classifier)
    probabilities = keras_probabilities(final, preprocessor, dev_inputs, batch_size)
    lora_difference = None
    if lora_layers(classifier):
        # The saved model has the LoRA updates merged into its kernels, so
        # compare it with the model as trained.
        trained = keras_probabilities(classifier, preprocessor, dev_inputs, batch_size)
        lora_difference = float(np.max(np.abs(trained - probabilities)))
        logger.info(
            "LoRA merged into the kernels; dev probabilities differ from the trained model "
            "by at most %.3g",
            lora_difference,
        )
    threshold = None
    if multilabel:
        metrics = _multilabel_evaluation(
            probabilities,
            dev_label_ids,
            labels.labels,
            training.tune_thresholds,
            paths,
            dev_examples,
        )
    elif training.tune_thresholds:
        tuned = tune_binary_threshold(probabilities, dev_label_ids)
        save_thresholds(paths.run_dir, labels.labels[1], tuned, dev_examples.path)
        threshold = tuned["threshold"]
        logger.info(
            "Decision threshold for %r: %.4f (dev macro-F1 %.4f, against %.4f for the most "
            "probable label)",
            labels.labels[1],
            threshold,
            tuned["macro_f1"],
            tuned["argmax_macro_f1"],
        )
    if not multilabel:
        metrics = evaluation_metrics(
            probabilities, dev_label_ids, labels.labels, dev_examples.path, threshold
        )
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["parameters"] = parameters
    if lora_difference is not None:
        metrics["lora_merge_max_abs_difference"] = lora_difference
    title = f"Dev evaluation of run {paths.run_name}"
    if multilabel:
        write_multilabel_report(metrics, paths.run_dir, title=title)
    else:
        write_report(metrics, paths.run_dir, title=title)
    if summaries:
        last_epoch = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) // steps_per_epoch
        write_final_metrics(log_dir, metrics, step=max(last_epoch - 1, 0))

    final.save(paths.model)
    save_tokenizer(
        bundle.tokenizer,
        paths.tokenizer,
        config.data.sequence_length,
        text_pair=config.data.text_pair_column is not None,
    )
    export_report = None
    if config.output.export:
        # Export from the saved file: this exports exactly what
        # `model.keras` holds.
        run = load_trained_run(paths.run_dir)
        export_report = export_run(
            run,
            dev_inputs,
            None if multilabel else dev_label_ids,
            calibration_texts=train_inputs,
        )
    return RunResult(
        paths=paths,
        metrics=metrics,
        export_report=export_report,
        **progress,
    )
