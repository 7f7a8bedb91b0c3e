"""TensorBoard summaries beyond Keras's: step scalars, dev analysis and HParams."""

from __future__ import annotations

import glob
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from fnn_keras.evaluation.metrics import classification_metrics, example_losses, most_wrong
from fnn_keras.evaluation.plots import confusion_matrix_png
from fnn_keras.evaluation.report import markdown_cell, per_label_table
from fnn_keras.layers import FeedbackLayer

logger = logging.getLogger(__name__)

# Step values that `TrainingModel.train_step` adds to the logs. They belong
# to one step, so they are written per step and left out of the epoch logs,
# where Keras would record the last step's value as the epoch's.
STEP_ONLY_LOGS = ("gradient_norm", "loss_scale")

# Thresholds of each precision-recall curve (TensorBoard's default is 201).
PR_CURVE_THRESHOLDS = 201

# Feedback layers with at most this many weights get histograms every epoch
# by default (the default head has 164,352). Histogram time grows with the
# weight count, so larger heads get none unless requested. NOTE: the limit
# is a judgment; only the default head's cost was measured.
HISTOGRAM_AUTO_MAX_PARAMETERS = 1_000_000


def read_events(log_dir: str):
    """Yield the `Event` protos of every event file in `log_dir`, oldest file first."""
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        try:
            for record in tf.data.TFRecordDataset(path):
                yield tf.compat.v1.Event.FromString(record.numpy())
        except tf.errors.DataLossError:
            # A kill can cut the last record short. The records before it still count.
            continue


def last_logged_step(log_dir: str, prefix: str) -> int:
    """Return the highest step of a scalar named `prefix...` in `log_dir`, or -1.

    Args:
        log_dir: A directory of TensorBoard event files.
        prefix: Start of the tag names to look at, such as `"batch_"`.

    Example:

    ```python
    last_logged_step("tensorboard_logs/run/train", "batch_")
    ```
    """
    last = -1
    for event in read_events(log_dir):
        if any(value.tag.startswith(prefix) for value in event.summary.value):
            last = max(last, int(event.step))
    return last


class StepScalarLogger(keras.callbacks.Callback):
    """Write training scalars every N optimizer steps, and examples per second.

    Keras's `TensorBoard` callback with `update_freq=N` also drops the epoch
    scalars of every epoch whose last global batch is not a multiple of N
    (Keras 3.15: its step filter stays active while epoch metrics are
    written). So `TensorBoard` runs with `update_freq="epoch"` and this
    callback writes the per-step scalars, as `batch_<name>` in the same
    `train` directory: loss, accuracy, global gradient norm, loss scale
    (float16 mixed precision only), learning rate and examples per second
    since the previous write. At each epoch end it adds
    `examples_per_second` of the epoch's training steps to the epoch logs,
    which `TensorBoard` then writes; place it before `TensorBoard`.

    The step is the optimizer's iteration count, which `TrainingBackup`
    restores, so a resumed run continues the curve. Each write is flushed,
    and steps that event files already hold (written after the last backup,
    before an interruption) are not written again.

    Args:
        log_dir: The run's TensorBoard directory; scalars go to its `train`
            subdirectory. `None` writes nothing and only adds the epoch's
            examples per second to the logs.
        every_steps: Write every N optimizer steps.
        num_examples: Training examples per epoch.
        batch_size: Global batch size; the last batch of an epoch contains
            the remainder.

    Example:

    ```python
    logger = StepScalarLogger("tensorboard_logs/run", 20, num_examples=4000, batch_size=32)
    model.fit(data, callbacks=[logger, keras.callbacks.TensorBoard("tensorboard_logs/run")])
    ```
    """

    def __init__(self, log_dir: str | None, every_steps: int, num_examples: int, batch_size: int):
        super().__init__()
        self.log_dir = None if log_dir is None else os.path.join(log_dir, "train")
        self.every_steps = every_steps
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.steps_per_epoch = -(-num_examples // batch_size)
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.log_dir is not None:
            self._written_through = last_logged_step(self.log_dir, prefix="batch_")
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        now = time.perf_counter()
        self._epoch_start = self._window_start = now
        self._epoch_end = now
        self._epoch_examples = self._window_examples = 0

    def on_train_batch_end(self, batch, logs=None):
        self._epoch_end = time.perf_counter()
        # Only an epoch's last batch has fewer examples (the remainder). A
        # resumed epoch runs fewer batches, but still ends with that one.
        last_batch = batch == (self.params or {}).get("steps", -1) - 1
        remainder = self.num_examples - (self.steps_per_epoch - 1) * self.batch_size
        examples = remainder if last_batch else self.batch_size
        self._epoch_examples += examples
        self._window_examples += examples
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        if self._writer is None or step % self.every_steps or not isinstance(logs, dict):
            return
        rate = self._window_examples / max(self._epoch_end - self._window_start, 1e-9)
        self._window_start, self._window_examples = self._epoch_end, 0
        # A float16 step skipped for overflowing gradients leaves the
        # optimizer's step unchanged, so the same step can come twice.
        if step <= self._written_through:
            return
        self._written_through = step
        learning_rate = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        with self._writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(f"batch_{name}", float(value))
            tf.summary.scalar("batch_learning_rate", learning_rate)
            tf.summary.scalar("batch_examples_per_second", rate)
        self._writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._epoch_examples:
            seconds = max(self._epoch_end - self._epoch_start, 1e-9)
            logs["examples_per_second"] = self._epoch_examples / seconds

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def feedback_layers(classifier: keras.Model) -> list[tuple[str, FeedbackLayer]]:
    """Return the classifier's feedback layers as `(direction, layer)` pairs.

    A bidirectional head gives `("forward", ...)` and `("backward", ...)`,
    a one-way head `("forward", ...)`.
    """
    found = []
    for layer in classifier.layers:
        if isinstance(layer, keras.layers.Bidirectional) and isinstance(
            layer.forward_layer, FeedbackLayer
        ):
            found += [("forward", layer.forward_layer), ("backward", layer.backward_layer)]
        elif isinstance(layer, FeedbackLayer):
            found.append(("forward", layer))
    return found


def _backbone(classifier: keras.Model) -> keras.Model:
    for layer in classifier.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{classifier.name} has no backbone model among its layers.")


def default_histogram_every_epochs(classifier: keras.Model) -> int:
    """Return 1 when the feedback layers are small enough for histograms each epoch, else 0."""
    parameters = sum(
        int(np.prod(weight.shape))
        for _, layer in feedback_layers(classifier)
        for weight in layer.weights
    )
    return 1 if parameters <= HISTOGRAM_AUTO_MAX_PARAMETERS else 0


def most_wrong_markdown(rows: list[dict]) -> str:
    """Render `most_wrong` rows as a Markdown table."""
    if not rows:
        return "Every dev example is classified correctly."
    lines = [
        "| # | example | text | true | predicted | p(predicted) | p(true) | loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank, row in enumerate(rows, start=1):
        lines.append(
            f"| {rank} | {row['index'] + 1} | {markdown_cell(row['text'])} "
            f"| {markdown_cell(row['true'])} | {markdown_cell(row['predicted'])} "
            f"| {row['probability']:.4f} | {row['true_probability']:.4f} | {row['loss']:.3f} |"
        )
    return "\n".join(lines)


class DevEvaluation(keras.callbacks.Callback):
    """Evaluate on the dev set at each epoch end and write the dev analysis.

    One forward pass over the dev batches gives every dev summary and the
    `val_loss` and `val_accuracy` logs that early stopping and the best
    checkpoint read, so `fit` runs without `validation_data` and the dev set
    is read once per epoch. The pass runs outside the replicas on this
    process's device, so each worker of a multi-worker cluster gets the same
    values without an all-reduce. Place it before the callbacks that read
    the `val_` logs.

    With a `log_dir` it writes to its `validation` subdirectory, at the
    0-based epoch as step like Keras's epoch scalars:

    - scalars `epoch_macro_f1`, `epoch_weighted_f1`, `epoch_macro_precision`,
      `epoch_macro_recall`, and `class_precision/<label>`,
      `class_recall/<label>`, `class_f1/<label>` for each label;
    - text `per_class` (the table) and `most_wrong` (the misclassified
      examples with the highest loss);
    - images `confusion_matrix/counts` and `confusion_matrix/row_fractions`;
    - a precision-recall curve `pr_curve/<label>` for each label (the
      PR-curve plugin stores it as `pr_curve/<label>/pr_curves`),
      one-vs-rest on that label's probability;
    - every `histogram_every_epochs` epochs, histograms of the feedback
      layers' weights (`weights/...`) and of their state `u` after each
      sequence's last real token (`state_at_last_step/<direction>`), over
      the first `state_examples` dev examples.

    Args:
        dataset: The dev batches, `(features, label_ids)`, in order.
        label_ids: True class ids of the dev examples, in order.
        texts: The dev texts, or `(text, text_pair)` tuples, in order.
        labels: Label names in class-id order.
        log_dir: The run's TensorBoard directory, or `None` to write nothing
            (a non-chief worker, or summaries turned off).
        most_wrong_count: Examples in the `most_wrong` table.
        histogram_every_epochs: Write histograms every N epochs; 0 turns them off.
        state_examples: Dev examples whose feedback state goes into the
            state histograms.
        jit_compile: Compile the forward pass with XLA.

    Example:

    ```python
    dev = DevEvaluation(dev_data, dev_label_ids, dev_texts, ["neg", "pos"], "logs/run")
    model.fit(train_data, epochs=3, callbacks=[dev, keras.callbacks.EarlyStopping()])
    ```
    """

    def __init__(
        self,
        dataset: tf.data.Dataset,
        label_ids,
        texts: list,
        labels: list[str],
        log_dir: str | None = None,
        most_wrong_count: int = 20,
        histogram_every_epochs: int = 0,
        state_examples: int = 64,
        jit_compile: bool = False,
    ):
        super().__init__()
        self.dataset = dataset
        self.label_ids = np.asarray(label_ids, dtype=np.int64)
        self.texts = texts
        self.labels = list(labels)
        self.log_dir = None if log_dir is None else os.path.join(log_dir, "validation")
        self.most_wrong_count = most_wrong_count
        self.histogram_every_epochs = histogram_every_epochs
        self.state_examples = state_examples
        self.jit_compile = jit_compile
        self._writer = None
        self._forward = None
        self._states = None

    def _classifier(self) -> keras.Model:
        return getattr(self.model, "classifier", self.model)

    def on_train_begin(self, logs=None):
        classifier = self._classifier()
        # NOTE: a signature of `(None, None)` features traces once but ran the
        # SST-2 dev set at half the speed of the traces that `reduce_retracing`
        # settles on (10.4 s against 5.5 s, 2-core CPU), so it is not used.
        self._forward = tf.function(
            lambda features: classifier(features, training=False),
            jit_compile=self.jit_compile,
            reduce_retracing=True,
        )
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def predict(self) -> np.ndarray:
        """Return the current model's dev probabilities, `(n, num_labels)` float32."""
        batches = [
            np.asarray(self._forward(features), dtype=np.float32) for features, _ in self.dataset
        ]
        return np.concatenate(batches, axis=0)

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.predict()
        predicted = np.argmax(probabilities, axis=-1)
        if logs is not None:
            for name in STEP_ONLY_LOGS:
                logs.pop(name, None)
            logs["val_loss"] = float(example_losses(probabilities, self.label_ids).mean())
            logs["val_accuracy"] = float(np.mean(predicted == self.label_ids))
        if self._writer is None:
            return
        metrics = classification_metrics(self.label_ids, predicted, self.labels)
        with self._writer.as_default(step=epoch):
            self._write_metrics(metrics)
            self._write_pr_curves(probabilities, epoch)
            rows = most_wrong(
                probabilities, self.label_ids, self.texts, self.labels, self.most_wrong_count
            )
            tf.summary.text("most_wrong", most_wrong_markdown(rows))
            every = self.histogram_every_epochs
            if every and (epoch + 1) % every == 0:
                self._write_histograms()
        self._writer.flush()

    def _write_metrics(self, metrics: dict) -> None:
        per_label = metrics["per_label"]
        tf.summary.scalar("epoch_macro_f1", metrics["macro_f1"])
        tf.summary.scalar("epoch_weighted_f1", metrics["weighted_f1"])
        tf.summary.scalar(
            "epoch_macro_precision", np.mean([row["precision"] for row in per_label.values()])
        )
        tf.summary.scalar(
            "epoch_macro_recall", np.mean([row["recall"] for row in per_label.values()])
        )
        for label, row in per_label.items():
            tf.summary.scalar(f"class_precision/{label}", row["precision"])
            tf.summary.scalar(f"class_recall/{label}", row["recall"])
            tf.summary.scalar(f"class_f1/{label}", row["f1"])
        tf.summary.text("per_class", per_label_table(metrics))
        for name, normalize in (("counts", False), ("row_fractions", True)):
            png = confusion_matrix_png(metrics["confusion_matrix"], self.labels, normalize)
            image = tf.image.decode_png(png, channels=4)[tf.newaxis]  # (1, height, width, 4)
            tf.summary.image(f"confusion_matrix/{name}", image)

    def _write_pr_curves(self, probabilities: np.ndarray, epoch: int) -> None:
        for class_id, label in enumerate(self.labels):
            summary = pr_curve_summary.pb(
                f"pr_curve/{label}",
                labels=self.label_ids == class_id,
                predictions=probabilities[:, class_id],
                num_thresholds=PR_CURVE_THRESHOLDS,
                display_name=f"precision-recall: {label}",
            )
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=epoch)

    def _write_histograms(self) -> None:
        classifier = self._classifier()
        layers = feedback_layers(classifier)
        for _, layer in layers:
            for weight in layer.weights:
                tf.summary.histogram(f"weights/{weight.path}", ops.convert_to_numpy(weight))
        if not layers or self.state_examples <= 0:
            return
        if self._states is None:
            backbone = _backbone(classifier)

            def last_states(features):
                sequences = backbone(features, training=False)["sequence_output"]
                mask = tf.cast(features["padding_mask"], tf.bool)
                batch = tf.shape(sequences)[0]
                states = []
                for _, layer in layers:
                    # Called directly, outside Keras's autocast, the layer reads
                    # its weights in their own dtype, so the loop runs in it too.
                    inputs = tf.cast(sequences, layer.variable_dtype)
                    initial = tf.zeros([batch, layer.cell.units], layer.variable_dtype)
                    _, _, (state,) = layer.inner_loop(inputs, [initial], mask, training=False)
                    states.append(state)
                return states

            self._states = tf.function(last_states, reduce_retracing=True)
        collected = [[] for _ in layers]
        seen = 0
        for features, _ in self.dataset:
            for states, state in zip(collected, self._states(features), strict=True):
                states.append(np.asarray(state, dtype=np.float32))
            seen += int(features["padding_mask"].shape[0])
            if seen >= self.state_examples:
                break
        for (direction, _), states in zip(layers, collected, strict=True):
            values = np.concatenate(states, axis=0)[: self.state_examples]
            tf.summary.histogram(f"state_at_last_step/{direction}", values)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# === HParams ===

FINAL_METRICS = {
    "final/dev_accuracy": "dev accuracy",
    "final/dev_macro_f1": "dev macro-F1",
    "final/dev_loss": "dev loss",
    "final/train_seconds": "training seconds",
}


LEADING_HPARAMS = (
    "model.backbone",
    "data.sequence_length",
    "model.feedback_units",
    "model.feedback_steps",
    "model.fine_tune",
    "training.learning_rate",
    "training.batch_size",
    "strategy",
    "replicas",
    "training.epochs",
    "training.seed",
    "training.adversarial",
    "data.train",
)


def hparam_values(config, strategy: tf.distribute.Strategy) -> dict:
    """Flatten a run's data, model and training settings for the HParams dashboard.

    Values that are not numbers, strings or booleans (lists, mappings,
    `None`) become strings. The strategy is added as its class name and
    replica count.

    Example:

    ```python
    hparam_values(Config(), tf.distribute.get_strategy())["training.learning_rate"]  # 5e-05
    ```
    """
    values = {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
    for section in ("data", "model", "training"):
        for key, value in config.to_dict()[section].items():
            if not isinstance(value, (bool, int, float, str)):
                value = "none" if value is None else str(value)
            values[f"{section}.{key}"] = value
    # The dashboard shows the first few settings until others are ticked,
    # so the ones runs most often differ in come first.
    first = [name for name in LEADING_HPARAMS if name in values]
    return {name: values[name] for name in first + [n for n in values if n not in first]}


def _experiment(summary) -> object:
    """Return the hparams `Experiment` of a summary proto, without its creation time."""
    value = summary.value[0]
    experiment = hparams_metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
    experiment.ClearField("time_created_secs")
    return experiment


def _latest_experiment(log_root: str):
    """Return the last `Experiment` written to `log_root`, or `None`."""
    latest = None
    for event in read_events(log_root):
        if any(v.tag == hparams_metadata.EXPERIMENT_TAG for v in event.summary.value):
            latest = _experiment(event.summary)
    return latest


def write_hparams(log_dir: str, values: dict, run_name: str) -> None:
    """Write the HParams session of a run, and the experiment of its log root.

    The session (the run's settings) goes into the run's TensorBoard
    directory. The experiment names the settings and the metrics that the
    dashboard shows, in order. TensorBoard reads one experiment for all the
    runs under a log root, so it goes into the log root, and only when the
    root has none or an older one with other settings.

    Args:
        log_dir: The run's TensorBoard directory, `<log_root>/<run_name>`.
        values: Setting name to value, from `hparam_values`.
        run_name: The run's name, used as the session's trial id.

    Example:

    ```python
    write_hparams("tensorboard_logs/run", hparam_values(config, strategy), "run")
    ```
    """
    log_root = os.path.dirname(os.path.normpath(log_dir))
    metrics = [
        hparams_api.Metric(tag, display_name=name) for tag, name in FINAL_METRICS.items()
    ] + [
        hparams_api.Metric(
            "epoch_accuracy", group="validation", display_name="dev accuracy (last epoch)"
        ),
        hparams_api.Metric("epoch_loss", group="validation", display_name="dev loss (last epoch)"),
    ]
    experiment = hparams_api.hparams_config_pb(
        hparams=[hparams_api.HParam(name) for name in values], metrics=metrics
    )
    if _latest_experiment(log_root) != _experiment(experiment):
        writer = tf.summary.create_file_writer(log_root)
        with writer.as_default():
            tf.summary.experimental.write_raw_pb(experiment.SerializeToString(), step=0)
        writer.close()
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        hparams_api.hparams(values, trial_id=run_name)
    writer.close()


def write_final_metrics(log_dir: str, metrics: dict, step: int) -> None:
    """Write the run's final dev metrics as the HParams session's scalars.

    Args:
        log_dir: The run's TensorBoard directory.
        metrics: `accuracy`, `macro_f1`, `loss` and `train_seconds`.
        step: Step of the scalars, the number of the last epoch trained.

    Example:

    ```python
    write_final_metrics("tensorboard_logs/run", {"accuracy": 0.9, ...}, step=4)
    ```
    """
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=step):
        tf.summary.scalar("final/dev_accuracy", metrics["accuracy"])
        tf.summary.scalar("final/dev_macro_f1", metrics["macro_f1"])
        tf.summary.scalar("final/dev_loss", metrics["loss"])
        tf.summary.scalar("final/train_seconds", metrics["train_seconds"])
    writer.close()
