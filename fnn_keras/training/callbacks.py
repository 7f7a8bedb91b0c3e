"""Keras callbacks for a training run: TensorBoard, checkpoints, resume."""

from __future__ import annotations

import os

import keras
from keras import ops


class LearningRateLogger(keras.callbacks.Callback):
    """Add the current learning rate to each training batch's logs.

    Place it before `keras.callbacks.TensorBoard` in the callback list: the
    two share the logs dictionary, so TensorBoard then writes
    `batch_learning_rate` with its other per-step scalars. (TensorBoard writes
    the learning rate only per epoch by itself.)

    Example:

    ```python
    model.fit(data, callbacks=[LearningRateLogger(), keras.callbacks.TensorBoard()])
    ```
    """

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(logs, dict):
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(ops.convert_to_numpy(rate))


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
        backup_dir: Directory of `BackupAndRestore`, removed when training
            ends cleanly.
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
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=True),
        LearningRateLogger(),
        keras.callbacks.TensorBoard(log_dir=log_dir, update_freq=log_every_steps),
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
