"""One token-tagging run: read CoNLL files, fit the tagger, score entities, save."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from fnn_keras.backbones import load_backbone, vocabulary_from_tokens
from fnn_keras.config import Config, ConfigError, save_config
from fnn_keras.data.conll import Sentences, build_tag_vocabulary, read_conll
from fnn_keras.data.tagging_pipeline import (
    AlignedSentences,
    align_sentences,
    log_alignment,
    tagging_dataset,
    word_tags,
)
from fnn_keras.evaluation.entities import entity_metrics, entity_report_markdown
from fnn_keras.layout import run_paths
from fnn_keras.models.fine_tuning import parameter_counts
from fnn_keras.models.tagger import tag_probabilities, tagger_from_config
from fnn_keras.tokenizer import save_tokenizer
from fnn_keras.training.callbacks import StopOnNonFiniteLoss
from fnn_keras.training.optimization import build_optimizer, learning_rate_multipliers
from fnn_keras.training.precision import float32_copy, precision_policy, resolve_mixed_precision
from fnn_keras.training.strategy import is_multi_worker
from fnn_keras.training.summaries import StepScalarLogger
from fnn_keras.training.train_model import TrainingModel
from fnn_keras.training.trainer import (
    XLA_LENGTH_MULTIPLE,
    RunResult,
    _check_run_is_new,
    _sequence_length_message,
    new_run_name,
    resolve_jit_compile,
    weights_digest,
)

logger = logging.getLogger(__name__)

# The dev scores each epoch adds to the logs, as `val_<name>`.
EPOCH_SCORES = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")


def read_tagging_splits(config: Config) -> tuple[Sentences, Sentences]:
    """Read the train and dev CoNLL files that `config.data` names."""
    data = config.data
    train = read_conll(data.train, data.encoding, data.on_bad_row)
    dev = read_conll(data.dev, data.encoding, data.on_bad_row)
    limit = data.max_train_examples
    if limit is not None and limit < len(train):
        logger.info("Keeping the first %d of %d training sentences.", limit, len(train))
        dropped = len(train) - limit
        train = train.head(limit)
        train.skipped["beyond --max-train-examples"] = dropped
    return train, dev


def split_summary(sentences: Sentences, aligned: AlignedSentences) -> dict:
    """Return what was read, skipped and truncated in one split, for `data_summary.json`."""
    tags = collections.Counter(tag for row in sentences.tags for tag in row)
    pieces = aligned.padding_mask.sum(axis=1)
    return {
        "path": sentences.path,
        "sentences": len(sentences),
        "tokens": sentences.token_count,
        "skipped_sentences": dict(sentences.skipped),
        "tags": dict(sorted(tags.items())),
        "truncated_sentences": aligned.truncated_sentences,
        "truncated_words": aligned.truncated_words,
        "words_without_pieces": aligned.words_without_pieces,
        "max_pieces": int(pieces.max()),
        "mean_pieces": round(float(pieces.mean()), 1),
    }


def predict_word_tags(model, aligned: AlignedSentences, labels: list[str], batch_size: int):
    """Return the predicted tag of every word, read at its first piece."""
    probabilities = tag_probabilities(model, aligned.features(), batch_size)
    return word_tags(probabilities.argmax(axis=-1), aligned, labels)


class TaggingDevEvaluation(keras.callbacks.Callback):
    """Score the dev sentences at each epoch end and add the scores to the logs.

    One forward pass over the dev sentences gives `val_loss` (the sum of
    the cross-entropy over each sentence's word positions, averaged over
    sentences, as the training loss is) and `val_entity_f1`,
    `val_entity_precision`, `val_entity_recall` and `val_token_accuracy`.
    Keras's `TensorBoard` callback writes them under the run's
    `validation` directory as `epoch_loss`, `epoch_entity_f1` and so on,
    and early stopping reads `val_loss`. Place it before both.

    Args:
        aligned: The aligned dev sentences.
        gold_tags: The gold tags of the dev words.
        labels: Tag names in id order.
        batch_size: Sentences per forward pass.

    Example:

    ```python
    callback = TaggingDevEvaluation(dev_aligned, dev.tags, vocabulary.labels, 32)
    ```
    """

    def __init__(self, aligned, gold_tags, labels, batch_size):
        super().__init__()
        self.aligned = aligned
        self.gold_tags = gold_tags
        self.labels = labels
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        model = self.model.classifier
        probabilities = tag_probabilities(model, self.aligned.features(), self.batch_size)
        picked = np.take_along_axis(probabilities, self.aligned.tag_ids[..., None], axis=-1)[..., 0]
        # The same floor as Keras's cross-entropy, so a zero probability stays finite.
        losses = -np.log(np.clip(picked, keras.config.epsilon(), 1.0)) * self.aligned.weights
        logs["val_loss"] = float(losses.sum() / len(self.aligned))
        predicted = word_tags(probabilities.argmax(axis=-1), self.aligned, self.labels)
        scores = entity_metrics(self.gold_tags, predicted)
        for name in EPOCH_SCORES:
            logs[f"val_{name}"] = scores[name]
        logger.info(
            "Epoch %d: dev loss %.4f, entity F1 %.4f (precision %.4f, recall %.4f)",
            epoch + 1,
            logs["val_loss"],
            scores["entity_f1"],
            scores["entity_precision"],
            scores["entity_recall"],
        )


def _build_model(config: Config, bundle, num_tags: int, total_steps: int, jit_compile: bool):
    training = config.training
    tagger = tagger_from_config(config.model, bundle.backbone, num_tags, training.seed)
    optimizer = build_optimizer(
        training.learning_rate,
        total_steps,
        warmup_ratio=training.warmup_ratio,
        weight_decay=training.weight_decay,
        learning_rate_multipliers=learning_rate_multipliers(
            tagger,
            bundle.backbone,
            training.head_learning_rate_multiplier,
            training.layer_decay,
        ),
    )
    # Per-position losses, which `sample_weight` keeps at each word's first
    # piece. `TrainingModel` sums them and divides by the sentence count.
    model = TrainingModel(
        tagger,
        keras.losses.SparseCategoricalCrossentropy(reduction=None),
        jit_compile=jit_compile,
        clip_norm=training.clip_norm,
    )
    # XLA is applied per replica by `TrainingModel`, as in the classifier's run.
    model.compile(
        optimizer=optimizer,
        # Keras applies `sample_weight` only to `weighted_metrics`, so this
        # counts each word's first piece and nothing else.
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")],
        jit_compile=False,
    )
    return model


def _callbacks(config, paths, steps_per_epoch, dev_evaluation, log_dir, num_sentences):
    os.makedirs(os.path.dirname(paths.best_checkpoint), exist_ok=True)
    training = config.training
    callbacks = [
        StopOnNonFiniteLoss(steps_per_epoch),
        dev_evaluation,
        # Per-step scalars; before TensorBoard, which writes the examples per second it adds.
        StepScalarLogger(log_dir, training.log_every_steps, num_sentences, training.batch_size),
    ]
    if log_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    callbacks += [
        keras.callbacks.ModelCheckpoint(
            paths.best_checkpoint,
            monitor="val_loss",
            mode="min",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            mode="min",
            patience=training.early_stopping_patience,
            restore_best_weights=True,
        ),
    ]
    return callbacks


def write_tagging_report(metrics: dict, run_dir: str, title: str) -> tuple[str, str]:
    """Write `metrics.json` and `report.md` (with the per-type table) into `run_dir`."""
    metrics_path = os.path.join(run_dir, "metrics.json")
    report_path = os.path.join(run_dir, "report.md")
    with open(metrics_path, "w", encoding="utf-8") as file:
        json.dump(metrics, file, ensure_ascii=False, indent=2)
    with open(report_path, "w", encoding="utf-8") as file:
        file.write(entity_report_markdown(metrics, title))
    return metrics_path, report_path


def train_tagging(
    config: Config,
    strategy: tf.distribute.Strategy,
    verbose: int | str = "auto",
) -> RunResult:
    """Train and evaluate a token tagger end to end, on CoNLL train and dev files.

    The run reads both splits, builds the tag vocabulary (`O` first), and
    tokenizes each word into pieces with the tag on the first piece. It
    fits the tagger under `strategy` with the exact global-batch loss of
    `TrainingModel`, stops early on the dev loss and keeps the best
    weights, then scores dev entities (exact type and span). Outputs go
    to `run_paths(config.output, run_name)`: the config, `labels.json`
    (the tags), `data_summary.json`, the best checkpoint, `model.keras`,
    the tokenizer, `metrics.json` and `report.md`; TensorBoard gets the
    epoch loss, token accuracy and dev entity scores.

    Note: a tagging run does not back up its state for resuming, so an
    interrupted run, rerun with the same name, trains again from the start.
    Multi-worker clusters are not supported.

    Args:
        config: A validated `Config` with `data.task == "tagging"`.
        strategy: The distribution strategy, built before any other
            TensorFlow op ran.
        verbose: Verbosity of `model.fit`.

    Returns:
        A `RunResult` whose `metrics` are those of `entity_metrics` plus
        `train_seconds` and `parameters`.

    Raises:
        ConfigError, DataError, LabelError, BackboneError: Invalid input.
        NonFiniteLossError: The loss became NaN or infinite.

    Example:

    ```python
    config = config_from_dict({"data": {"task": "tagging", "train": "t.conll",
                                        "dev": "d.conll"}, "model": {"backbone": "tiny"}})
    result = train_tagging(config, tf.distribute.MirroredStrategy())
    result.metrics["entity_f1"]
    ```
    """
    if is_multi_worker(strategy):
        raise ConfigError(
            "--task tagging does not support multi-worker training yet; run it on one "
            "machine (--strategy mirrored or one_device)."
        )
    if config.data.labels is not None:
        raise ConfigError(
            "--task tagging takes its tags from the training file (O first, then the others "
            f"sorted); drop --labels. Received: {config.data.labels!r}."
        )
    training = config.training
    sequence_length = config.data.sequence_length

    # === Data ===
    train, dev = read_tagging_splits(config)
    vocabulary = build_tag_vocabulary(train, dev)
    logger.info("%d tags: %s", len(vocabulary), ", ".join(vocabulary.labels))
    run_name = config.output.run_name or new_run_name(
        config.output.export_dir, config.output.log_dir
    )
    paths = run_paths(config.output, run_name)
    _check_run_is_new(paths)
    config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, run_name=run_name)
    )
    token_vocabulary = None
    if config.model.vocabulary == "train":
        token_vocabulary = vocabulary_from_tokens(token for row in train.tokens for token in row)
        logger.info(
            "Tiny backbone vocabulary from %s: %d entries (special tokens, tokens, characters "
            "and ##characters)",
            train.path,
            len(token_vocabulary),
        )

    # === Model, under the strategy ===
    steps_per_epoch = math.ceil(len(train) / training.batch_size)
    total_steps = steps_per_epoch * training.epochs
    # NOTE: tagging has run in float32 without XLA on the CPU only. The GPU
    # defaults (XLA on, bfloat16 or float16) have not run for this task.
    jit_compile = resolve_jit_compile(training.jit_compile, training.deterministic)
    mixed_precision = resolve_mixed_precision(training.mixed_precision)
    with strategy.scope(), precision_policy(mixed_precision):
        bundle = load_backbone(
            config.model.backbone,
            seed=training.seed,
            dropout=config.model.backbone_dropout,
            vocabulary=token_vocabulary,
        )
        if sequence_length > bundle.max_sequence_length:
            raise ConfigError(_sequence_length_message(sequence_length, bundle.max_sequence_length))
        model = _build_model(config, bundle, len(vocabulary), total_steps, jit_compile)
    tagger = model.classifier
    parameters = parameter_counts(tagger)
    logger.info(
        "Tagger: %d of %d parameters trainable; %s compute, XLA %s, %d replica(s)",
        parameters["trainable"],
        parameters["total"],
        mixed_precision if mixed_precision != "off" else "float32",
        "on" if jit_compile else "off",
        strategy.num_replicas_in_sync,
    )

    os.makedirs(paths.run_dir, exist_ok=True)
    os.makedirs(paths.log_dir, exist_ok=True)
    save_config(config, paths.config)
    vocabulary.save(paths.labels)

    # === Input pipelines ===
    aligned = {}
    summary = {}
    for name, sentences in (("train", train), ("dev", dev)):
        tag_ids = [vocabulary.encode(tags) for tags in sentences.tags]
        aligned[name] = align_sentences(
            bundle.tokenizer, sentences.tokens, sequence_length, tag_ids
        )
        log_alignment(f"{name} ({sentences.path})", aligned[name], sequence_length)
        summary[name] = split_summary(sentences, aligned[name])
        logger.info(
            "%s: %d sentences, %d tokens, %d skipped, %d truncated, mean %.1f pieces",
            name,
            summary[name]["sentences"],
            summary[name]["tokens"],
            sum(sentences.skipped.values()),
            summary[name]["truncated_sentences"],
            summary[name]["mean_pieces"],
        )
    summary["vocabulary_size"] = len(bundle.tokenizer.get_vocabulary())
    with open(paths.data_summary, "w", encoding="utf-8") as file:
        json.dump(summary, file, ensure_ascii=False, indent=2)
    train_data = tagging_dataset(
        aligned["train"],
        training.batch_size,
        shuffle_seed=training.seed,
        pad_to_multiple=XLA_LENGTH_MULTIPLE if jit_compile else 1,
    )
    dev_evaluation = TaggingDevEvaluation(
        aligned["dev"], dev.tags, vocabulary.labels, training.batch_size
    )

    # === Fit ===
    log_dir = paths.log_dir
    callbacks = _callbacks(config, paths, steps_per_epoch, dev_evaluation, log_dir, len(train))
    start = time.perf_counter()
    history = model.fit(
        train_data,
        epochs=training.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        # `tagging_dataset` shuffles already.
        shuffle=False,
    )
    train_seconds = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", []))
    digest = weights_digest(tagger)
    logger.info("Training took %.1f s; weights digest %s", train_seconds, digest)

    # === Evaluate and save, in float32 and outside the strategy ===
    final = float32_copy(tagger)
    predicted = predict_word_tags(final, aligned["dev"], vocabulary.labels, training.batch_size)
    metrics = entity_metrics(dev.tags, predicted)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["parameters"] = parameters
    write_tagging_report(metrics, paths.run_dir, f"Dev entity scores of run {paths.run_name}")
    final.save(paths.model)
    save_tokenizer(bundle.tokenizer, paths.tokenizer, sequence_length)

    export_report = None
    if config.output.export:
        # Imported here: the export modules sit beside training, and only
        # runs that export need them.
        from fnn_keras.export.tagging import export_tagging_run

        # Dev sentences, joined with spaces, which `split_words` splits at again.
        parity_texts = [" ".join(tokens) for tokens in dev.tokens[:64]]
        export_report = export_tagging_run(paths.run_dir, parity_texts)
    return RunResult(
        paths=paths,
        metrics=metrics,
        export_report=export_report,
        train_seconds=train_seconds,
        epochs_run=epochs_run,
        steps_run=int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        weights_digest=digest,
    )
