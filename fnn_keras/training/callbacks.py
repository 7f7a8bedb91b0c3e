"""Keras callbacks for a training run: NaN stop, early stopping, backups, and the list."""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os

import keras
import numpy as np
from keras import ops

from fnn_keras.models.fine_tuning import lora_variables
from fnn_keras.training.summaries import StepScalarLogger

logger = logging.getLogger(__name__)


def non_finite_variable(model: keras.Model):
    """Return the first trainable variable holding a NaN or infinity, or `None`."""
    for variable in model.trainable_variables:
        if not np.all(np.isfinite(ops.convert_to_numpy(variable))):
            return variable
    return None


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite.

    Attributes:
        step: The optimizer step (1-based) whose loss was not finite.
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training at the first step whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, it raises `NonFiniteLossError`
    at once, naming the step. At each epoch end it also checks the weights,
    which a step can break while its own loss is finite. Place it first, so
    neither the best checkpoint nor the backup is written from broken
    weights.

    Args:
        steps_per_epoch: Optimizer steps per epoch, to name the epoch.

    Example:

    ```python
    model.fit(data, callbacks=[StopOnNonFiniteLoss(steps_per_epoch=100), backup])
    ```
    """

    def __init__(self, steps_per_epoch: int):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(np.asarray(loss).reshape(-1)[0])
        if math.isfinite(value):
            return
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        epoch, in_epoch = divmod(step - 1, self.steps_per_epoch)
        raise NonFiniteLossError(
            f"training loss became {value} at step {step} (epoch {epoch + 1}, "
            f"batch {in_epoch + 1} of {self.steps_per_epoch})",
            step,
        )

    def on_epoch_end(self, epoch, logs=None):
        variable = non_finite_variable(self.model)
        if variable is not None:
            step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
            raise NonFiniteLossError(
                f"weights became NaN or infinite by the end of epoch {epoch + 1} "
                f"(step {step}, {variable.path}), though the loss was finite",
                step,
            )


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose state carries over between `fit` calls.

    Keras's `EarlyStopping` resets its patience counter and best value at
    every `fit` call, and restores the best weights at the end of each. A
    resumed run calls `fit` once to finish the interrupted epoch and again
    for the rest. So this subclass keeps its state across calls, and
    `set_state` loads it from a backup. It restores the best weights only
    when training ends: on stopping early or after the last epoch.

    Args:
        total_epochs: Epochs of the whole run.
        **kwargs: Passed to `keras.callbacks.EarlyStopping`.

    Example:

    ```python
    stopper = ResumableEarlyStopping(5, monitor="val_accuracy", mode="max", patience=2)
    ```
    """

    def __init__(self, total_epochs: int, **kwargs):
        super().__init__(**kwargs)
        self.total_epochs = total_epochs
        # Keras sets these in `on_train_begin`, but a backup may read them earlier.
        self.wait, self.best, self.best_epoch, self.stopped_epoch = 0, None, 0, 0
        self._epochs_done = 0
        self._carried = None

    def get_state(self) -> dict:
        """Return the counters to save: `wait`, `best`, `best_epoch`, `stopped_epoch`."""
        best = None if self.best is None else float(self.best)
        return {
            "wait": self.wait,
            "best": best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def set_state(self, state: dict, best_weights: list | None) -> None:
        """Apply saved counters and best weights at the next `on_train_begin`."""
        self._carried = (dict(state), best_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._carried is not None:
            state, self.best_weights = self._carried
            self.wait = state["wait"]
            self.best = state["best"]
            self.best_epoch = state["best_epoch"]
            self.stopped_epoch = state["stopped_epoch"]

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._epochs_done = epoch + 1

    def on_train_end(self, logs=None):
        self._carried = (self.get_state(), self.best_weights)
        if self.model.stop_training or self._epochs_done >= self.total_epochs:
            super().on_train_end(logs)


@dataclasses.dataclass
class BackupState:
    """Training state that a backup stores beside its weights file.

    Attributes:
        global_step: Optimizer steps done.
        steps_per_epoch: Steps per epoch of the run that wrote it.
        weights: Name of the weights file in the backup directory.
        seed_states: Values of the model's random seed generators.
        early_stopping: `ResumableEarlyStopping.get_state()`.
        best_value: Best monitored value the best checkpoint holds.
        settings: The run settings that a resumed run must share, as
            `{"section.key": value}`.
    """

    global_step: int
    steps_per_epoch: int
    weights: str
    seed_states: list
    early_stopping: dict
    best_value: float | None
    settings: dict

    @property
    def epoch(self) -> int:
        """The 0-based epoch to continue."""
        return self.global_step // self.steps_per_epoch

    @property
    def step_in_epoch(self) -> int:
        """Steps of `epoch` already done."""
        return self.global_step % self.steps_per_epoch


STATE_FILE = "state.json"


def read_backup(backup_dir: str) -> BackupState | None:
    """Read the state a `TrainingBackup` saved, or `None` without a backup.

    Args:
        backup_dir: The backup directory of the run.

    Raises:
        ValueError: The state file is unreadable or names a missing file.

    Example:

    ```python
    state = read_backup("exported/run/backup")
    ```
    """
    path = os.path.join(backup_dir, STATE_FILE)
    if not os.path.exists(path):
        if os.path.isdir(backup_dir) and os.listdir(backup_dir):
            raise ValueError(
                f"{backup_dir} contains files but no {STATE_FILE}, so it cannot be resumed; "
                "delete it to train from the start."
            )
        return None
    try:
        with open(path, encoding="utf-8") as file:
            state = BackupState(**json.load(file))
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{path}: unreadable backup state ({error}); delete {backup_dir} to train from the start."
        ) from None
    if not os.path.exists(os.path.join(backup_dir, state.weights)):
        raise ValueError(
            f"{path} names {state.weights}, which is missing; delete {backup_dir} "
            "to train from the start."
        )
    return state


def _load_weights(model: keras.Model, path: str, backup_dir: str) -> None:
    try:
        model.load_weights(path)
    except (ValueError, OSError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"cannot load {path} into this model ({reason}); rerun with the settings "
            f"the run started with, or delete {backup_dir} to train from the start."
        ) from None


def _lora_file(weights_path: str) -> str:
    return weights_path.removesuffix(".weights.h5") + ".lora.npz"


def _save_lora_state(model: keras.Model, weights_path: str) -> None:
    """Write the LoRA layers' base kernels and factors beside a weights file.

    Keras saves a LoRA layer's kernel with the update merged in and no
    factors, and loading such a file sets both factors to zero. A zero pair
    has zero gradients, so a resumed LoRA run would stop learning. This file
    keeps the exact values.
    """
    variables = lora_variables(model)
    if not variables:
        return
    path = _lora_file(weights_path)
    arrays = {f"value_{i}": ops.convert_to_numpy(v) for i, v in enumerate(variables)}
    with open(path + ".tmp", "wb") as file:
        np.savez(file, paths=np.array([v.path for v in variables]), **arrays)
    os.replace(path + ".tmp", path)


def _load_lora_state(
    model: keras.Model, weights_path: str, backup_dir: str, required: bool = True
) -> None:
    variables = lora_variables(model)
    if not variables:
        return
    path = _lora_file(weights_path)
    if not required and not os.path.exists(path):
        # The weights file alone gives the same function, merged.
        logger.warning(
            "%s has no LoRA factors beside it; its weights are used with the updates merged.",
            weights_path,
        )
        return
    try:
        with np.load(path) as saved:
            paths = saved["paths"].tolist()
            values = {name: saved[f"value_{i}"] for i, name in enumerate(paths)}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"failed to read the LoRA factors of {weights_path} from {path} "
            f"({type(error).__name__}). Delete {backup_dir} to train from the start."
        ) from None
    missing = [v.path for v in variables if v.path not in values]
    if missing:
        raise ValueError(
            f"{path} is missing {missing[0]}. Rerun with the settings the run started "
            f"with, or delete {backup_dir} to train from the start."
        )
    for variable in variables:
        variable.assign(values[variable.path])


def _seed_variables(model: keras.Model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class TrainingBackup(keras.callbacks.Callback):
    """Save the training state every N steps and at each epoch end.

    A backup contains the weights with the optimizer state (one `.weights.h5`
    file), the random seed generators, the early-stopping counters and the
    best checkpoint's value. The JSON state file is replaced atomically
    after its weights file is complete, so a kill at any moment leaves the
    previous backup usable. `restore` loads all of it back. The data
    pipeline then skips the batches already done, so the rerun continues at
    the saved step as if never stopped.

    Keras's `BackupAndRestore` restarts an interrupted epoch from its first
    batch and keeps no callback state, hence this callback.

    NOTE: under float16 loss scaling, a step skipped for overflowing
    gradients leaves `optimizer.iterations` unchanged, so the saved step
    falls behind the batches run, and a resumed float16 run repeats that
    many batches.

    Args:
        backup_dir: Directory of the backup, used by no other writer.
        steps_per_epoch: Optimizer steps per epoch.
        every_steps: Save every N optimizer steps (and at every epoch end).
        early_stopping: The run's `ResumableEarlyStopping`.
        checkpoint: The run's best-weights `ModelCheckpoint`.

    Example:

    ```python
    backup = TrainingBackup("run/backup", 100, 50, stopper, checkpoint)
    backup.restore(model, read_backup("run/backup"))
    model.fit(data, callbacks=[stopper, checkpoint, backup])
    ```
    """

    def __init__(
        self,
        backup_dir: str,
        steps_per_epoch: int,
        every_steps: int,
        early_stopping: ResumableEarlyStopping,
        checkpoint: keras.callbacks.ModelCheckpoint,
        settings: dict | None = None,
    ):
        super().__init__()
        self.settings = dict(settings or {})
        self.backup_dir = backup_dir
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.early_stopping = early_stopping
        self.checkpoint = checkpoint
        self._checkpointed_best = None

    def restore(self, model: keras.Model, state: BackupState) -> None:
        """Load a backup into `model` and the callbacks. Call inside the strategy scope."""
        if state.steps_per_epoch != self.steps_per_epoch:
            raise ValueError(
                f"The backup in {self.backup_dir} was written with {state.steps_per_epoch} "
                f"steps per epoch, this run has {self.steps_per_epoch}: rerun with the same "
                "data and --batch-size, or delete the backup to start over."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        best_weights = None
        if self.early_stopping.restore_best_weights and os.path.exists(self.checkpoint.filepath):
            _load_weights(model, self.checkpoint.filepath, self.backup_dir)
            _load_lora_state(model, self.checkpoint.filepath, self.backup_dir, required=False)
            best_weights = model.get_weights()
        weights_path = os.path.join(self.backup_dir, state.weights)
        _load_weights(model, weights_path, self.backup_dir)
        _load_lora_state(model, weights_path, self.backup_dir)
        for variable, value in zip(_seed_variables(model), state.seed_states, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.early_stopping.set_state(state.early_stopping, best_weights)
        self.checkpoint.best = state.best_value
        self._checkpointed_best = state.best_value
        logger.info(
            "Resuming from the backup at step %d (epoch %d, batch %d of %d) in %s",
            state.global_step,
            state.epoch + 1,
            state.step_in_epoch,
            self.steps_per_epoch,
            self.backup_dir,
        )

    def on_train_batch_end(self, batch, logs=None):
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        # The last step of an epoch is saved by `on_epoch_end`, after the dev
        # pass. A backup saved before that pass would resume at the next
        # epoch and skip the pass, losing that epoch's early-stopping and
        # best-checkpoint decisions.
        if step % self.every_steps == 0 and step % self.steps_per_epoch != 0:
            self.save(step)

    def on_epoch_end(self, epoch, logs=None):
        # The checkpoint callback runs first, so a new best means that it has
        # just saved the current weights. Its file lacks their LoRA factors.
        best = self.checkpoint.best
        if best != self._checkpointed_best and os.path.exists(self.checkpoint.filepath):
            _save_lora_state(self.model, self.checkpoint.filepath)
            self._checkpointed_best = best
        self.save(int(ops.convert_to_numpy(self.model.optimizer.iterations)))

    def save(self, step: int) -> None:
        """Write the backup of optimizer step `step`.

        Raises:
            NonFiniteLossError: A weight is NaN or infinite, which a step
                can cause while its own loss is still finite. The previous
                backup stays.
        """
        variable = non_finite_variable(self.model)
        if variable is not None:
            raise NonFiniteLossError(
                f"weights became NaN or infinite at step {step} "
                f"({variable.path}), though the loss was finite",
                step,
            )
        os.makedirs(self.backup_dir, exist_ok=True)
        weights = f"step-{step:09d}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, weights), overwrite=True)
        _save_lora_state(self.model, os.path.join(self.backup_dir, weights))
        best = self.checkpoint.best
        state = BackupState(
            global_step=step,
            steps_per_epoch=self.steps_per_epoch,
            weights=weights,
            seed_states=[ops.convert_to_numpy(v).tolist() for v in _seed_variables(self.model)],
            early_stopping=self.early_stopping.get_state(),
            best_value=None if best is None or not math.isfinite(best) else float(best),
            settings=self.settings,
        )
        path = os.path.join(self.backup_dir, STATE_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as file:
            json.dump(dataclasses.asdict(state), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(path + ".tmp", path)
        keep = {weights, os.path.basename(_lora_file(weights))}
        for old in glob.glob(os.path.join(self.backup_dir, "step-*")):
            if os.path.basename(old) not in keep:
                os.remove(old)


def build_callbacks(
    log_dir: str | None,
    best_checkpoint: str,
    backup_dir: str,
    log_every_steps: int,
    patience: int,
    steps_per_epoch: int,
    epochs: int,
    backup_every_steps: int,
    dev_evaluation: keras.callbacks.Callback,
    num_examples: int,
    batch_size: int,
    monitor: str = "val_accuracy",
    settings: dict | None = None,
    profile_batches: tuple[int, int] | None = None,
) -> tuple[list[keras.callbacks.Callback], TrainingBackup]:
    """Build the callbacks that every training run uses.

    Args:
        log_dir: TensorBoard directory of the run, or `None` to write no
            summaries (a non-chief worker of a multi-worker cluster).
        best_checkpoint: Path of the best weights (`.weights.h5`).
        backup_dir: Directory of the `TrainingBackup`. The caller removes it
            once training has finished; an interrupted run keeps it for the
            rerun.
        log_every_steps: Per-step scalars are written every N steps.
        patience: Epochs without improvement of `monitor` before stopping.
        steps_per_epoch: Optimizer steps per epoch.
        epochs: Epochs of the whole run.
        backup_every_steps: Back up every N optimizer steps, besides every
            epoch end.
        dev_evaluation: The `DevEvaluation` that puts the `val_` logs in
            place at each epoch end.
        num_examples: Training examples per epoch, for examples per second.
        batch_size: Global batch size.
        monitor: The dev metric to maximise.
        settings: Run settings stored in each backup, which a resumed run
            must share.
        profile_batches: First and last batch of the first `fit` call to
            profile into the TensorBoard log, or `None`.

    Returns:
        The callbacks, in the order `fit` must call them, and the backup
        callback among them (for `TrainingBackup.restore`).

    Example:

    ```python
    dev = DevEvaluation(dev_data, dev_label_ids, dev_texts, labels, "logs/run")
    callbacks, backup = build_callbacks(
        "logs/run", "run/best.weights.h5", "run/backup", 20, 2, 100, 5, 50, dev, 3200, 32
    )
    ```
    """
    os.makedirs(os.path.dirname(best_checkpoint), exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint(
        best_checkpoint,
        monitor=monitor,
        mode="max",
        save_best_only=True,
        save_weights_only=True,
    )
    early_stopping = ResumableEarlyStopping(
        epochs,
        monitor=monitor,
        mode="max",
        patience=patience,
        restore_best_weights=True,
    )
    backup = TrainingBackup(
        backup_dir, steps_per_epoch, backup_every_steps, early_stopping, checkpoint, settings
    )
    callbacks = [
        StopOnNonFiniteLoss(steps_per_epoch),
        # Before every callback that reads the `val_` logs it sets.
        dev_evaluation,
        # Before TensorBoard, which writes the examples per second it adds.
        StepScalarLogger(log_dir, log_every_steps, num_examples, batch_size),
    ]
    if log_dir is not None:
        callbacks.append(
            keras.callbacks.TensorBoard(
                log_dir=log_dir, update_freq="epoch", profile_batch=profile_batches or 0
            )
        )
    callbacks += [
        checkpoint,
        early_stopping,
        # Last: it saves the states the callbacks above have just updated,
        # and restores them after their `on_train_begin` resets.
        backup,
    ]
    return callbacks, backup
