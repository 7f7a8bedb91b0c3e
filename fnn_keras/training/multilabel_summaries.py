"""The per-epoch dev evaluation of a multi-label run."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from fnn_keras.data.multilabel import DEFAULT_THRESHOLD
from fnn_keras.evaluation.multilabel import format_multilabel_report, multilabel_metrics
from fnn_keras.training.summaries import PR_CURVE_THRESHOLDS, STEP_ONLY_LOGS, DevEvaluation


class MultilabelDevEvaluation(DevEvaluation):
    """Evaluate a multi-label model on the dev set at each epoch end.

    It sets the logs `val_loss` (mean binary cross-entropy), `val_micro_f1`
    and `val_macro_f1`, with every label at threshold 0.5; the run's early
    stopping and best checkpoint follow `val_micro_f1`. With a `log_dir` it
    writes to its `validation` subdirectory, at the 0-based epoch:

    - scalars `epoch_micro_precision`, `epoch_micro_recall`,
      `epoch_exact_match` and `class_precision`, `class_recall`, `class_f1`
      per label (Keras's TensorBoard callback writes the `val_` logs);
    - text `per_label` (the table);
    - a precision-recall curve `pr_curve/<label>` per label;
    - the feedback histograms of `DevEvaluation`.

    Args:
        dataset: The dev batches, `(features, targets)`, in order.
        targets: `(n, num_labels)` 0/1 dev targets.
        texts: The dev texts, in order.
        labels: Label names in output order.
        log_dir: The run's TensorBoard directory, or `None` to write nothing.
        histogram_every_epochs: Write histograms every N epochs; 0 is off.
        jit_compile: Compile the forward pass with XLA.

    Example:

    ```python
    dev = MultilabelDevEvaluation(dev_data, dev_targets, dev_texts, ["a", "b"], "logs/run")
    model.fit(train_data, epochs=3, callbacks=[dev])
    ```
    """

    def __init__(
        self,
        dataset,
        targets,
        texts: list,
        labels: list[str],
        log_dir: str | None = None,
        histogram_every_epochs: int = 0,
        jit_compile: bool = False,
    ):
        super().__init__(
            dataset,
            np.zeros(len(targets), np.int64),
            texts,
            labels,
            log_dir=log_dir,
            most_wrong_count=0,
            histogram_every_epochs=histogram_every_epochs,
            jit_compile=jit_compile,
        )
        self.targets = np.asarray(targets, dtype=np.float32)

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.predict()
        thresholds = [DEFAULT_THRESHOLD] * len(self.labels)
        metrics = multilabel_metrics(probabilities, self.targets, self.labels, thresholds)
        if logs is not None:
            for name in STEP_ONLY_LOGS:
                logs.pop(name, None)
            logs["val_loss"] = metrics["loss"]
            logs["val_micro_f1"] = metrics["micro_f1"]
            logs["val_macro_f1"] = metrics["macro_f1"]
        if self._writer is None:
            return
        with self._writer.as_default(step=epoch):
            # Keras's TensorBoard callback writes the `val_` logs above as
            # `epoch_loss`, `epoch_micro_f1` and `epoch_macro_f1`.
            for name in ("micro_precision", "micro_recall"):
                tf.summary.scalar(f"epoch_{name}", metrics[name])
            tf.summary.scalar("epoch_exact_match", metrics["accuracy"])
            for label, row in metrics["per_label"].items():
                tf.summary.scalar(f"class_precision/{label}", row["precision"])
                tf.summary.scalar(f"class_recall/{label}", row["recall"])
                tf.summary.scalar(f"class_f1/{label}", row["f1"])
            tf.summary.text("per_label", format_multilabel_report(metrics, "Dev"))
            for column, label in enumerate(self.labels):
                summary = pr_curve_summary.pb(
                    f"pr_curve/{label}",
                    labels=self.targets[:, column] == 1,
                    predictions=probabilities[:, column],
                    num_thresholds=PR_CURVE_THRESHOLDS,
                    display_name=f"precision-recall: {label}",
                )
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=epoch)
            every = self.histogram_every_epochs
            if every and (epoch + 1) % every == 0:
                self._write_histograms()
        self._writer.flush()
