"""Keras callbacks for a training run: TensorBoard, checkpoints, resume."""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from keras import ops


class StepScalarLogger(keras.callbacks.Callback):
    """Write training loss, metrics and learning rate every N optimizer steps.

    Keras's `TensorBoard` callback with `update_freq=N` also drops the epoch
    scalars of every epoch whose last global batch is not a multiple of N
    (Keras 3.15: its step filter stays active while epoch metrics are
    written). So `TensorBoard` runs with `update_freq="epoch"` and this
    callback writes the per-step scalars, as `batch_<name>` in the same
    `train` directory. The step is the optimizer's iteration count, which
    `BackupAndRestore` restores, so a resumed run continues the curve.

    Args:
        log_dir: The run's TensorBoard directory; scalars go to its `train`
            subdirectory.
        every_steps: Write every N optimizer steps.

    Example:

    ```python
    model.fit(data, callbacks=[StepScalarLogger("tensorboard_logs/run", 20)])
    ```
    """

    def __init__(self, log_dir: str, every_steps: int):
        super().__init__()
        self.log_dir = os.path.join(log_dir, "train")
        self.every_steps = every_steps
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every_steps or not isinstance(logs, dict):
            return
        rate = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        with self._writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(f"batch_{name}", float(value))
            tf.summary.scalar("batch_learning_rate", rate)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def build_callbacks(
    log_dir: str,
    best_checkpoint: str,
    backup_dir: str,
    log_every_steps: int,
    patience: int,
    monitor: str = "val_accuracy",
) -> list[keras.callbacks.Callback]:
    """Build the callbacks that every training run uses.

    Args:
        log_dir: TensorBoard directory of the run.
        best_checkpoint: Path of the best weights (`.weights.h5`).
        backup_dir: Directory of `BackupAndRestore`. The caller removes it
            once `fit` returns: Keras's own cleanup runs in `on_train_end`,
            which also runs when training is interrupted, and so would delete
            the backup that a rerun needs.
        log_every_steps: Per-step scalars are written every N steps.
        patience: Epochs without improvement of `monitor` before stopping.
        monitor: The dev metric to maximise.

    Returns:
        The callbacks, in the order `fit` must call them.

    Example:

    ```python
    callbacks = build_callbacks("logs/run", "run/best.weights.h5", "run/backup", 20, 2)
    ```
    """
    os.makedirs(os.path.dirname(best_checkpoint), exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"),
        StepScalarLogger(log_dir, log_every_steps),
        keras.callbacks.ModelCheckpoint(
            best_checkpoint,
            monitor=monitor,
            mode="max",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(
            monitor=monitor,
            mode="max",
            patience=patience,
            restore_best_weights=True,
        ),
    ]
