import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from fnn_keras.config import ConfigError, config_from_dict
from fnn_keras.training import trainer


class InterruptAfterEpoch(keras.callbacks.Callback):
    """Raise `KeyboardInterrupt`, as Ctrl-C does, when an epoch ends.

    Raised directly, so the test does not depend on when Python handles a
    signal: in one CI run a SIGINT sent with `os.kill` never surfaced as a
    `KeyboardInterrupt`. The SIGKILL resume test covers real signals.
    """

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_resumes(small_data, tmp_path, monkeypatch):
    train, dev = small_data
    config = config_from_dict(
        {
            "data": {"train": train, "dev": dev},
            "model": {"backbone": "tiny", "feedback_units": 4},
            "training": {"epochs": 3, "batch_size": 4, "early_stopping_patience": 5},
            "output": {
                "run_name": "resumed",
                "export": False,
                "log_dir": str(tmp_path / "logs"),
                "export_dir": str(tmp_path / "exported"),
            },
        }
    )
    build_callbacks = trainer.build_callbacks

    def callbacks_with_interrupt(**kwargs):
        # After the backup of the end of epoch 2 (index 1).
        callbacks, backup = build_callbacks(**kwargs)
        return callbacks + [InterruptAfterEpoch(1)], backup

    monkeypatch.setattr(trainer, "build_callbacks", callbacks_with_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, verbose=0)
    run_dir = tmp_path / "exported" / "resumed"
    assert os.path.isfile(run_dir / "backup" / "state.json")
    assert not os.path.exists(run_dir / "model.keras")

    monkeypatch.setattr(trainer, "build_callbacks", build_callbacks)
    # A rerun with other settings would not continue the same run.
    for section, key, value in (("training", "seed", 5), ("training", "epochs", 2)):
        changed = dataclasses.replace(
            config, **{section: dataclasses.replace(getattr(config, section), **{key: value})}
        )
        with pytest.raises(ConfigError, match=f"{section}.{key}="):
            trainer.train(changed, verbose=0)
    result = trainer.train(config, verbose=0)
    assert result.epochs_run == 1
    assert os.path.isfile(run_dir / "model.keras")
    assert not os.path.exists(run_dir / "backup")


def test_nan_loss_exits_naming_step(small_data, tmp_path, monkeypatch, capsys):
    """A loss that turns NaN at step 5 stops the run there, exit code 3."""
    from conftest import assert_one_line_error
    from fnn_keras import train as train_cli
    from fnn_keras.training import train_model

    per_example = train_model.TrainingModel._loss_sum

    def nan_from_step_5(self, y, probabilities, sample_weight):
        loss = per_example(self, y, probabilities, sample_weight)
        # `iterations` counts finished steps: 4 during the fifth.
        broken = self.optimizer.iterations >= 4
        return tf.where(broken, tf.constant(float("nan")), loss)

    monkeypatch.setattr(train_model.TrainingModel, "_loss_sum", nan_from_step_5)
    train, dev = small_data
    argv = [
        "--backbone", "tiny", "--train", train, "--dev", dev, "--batch-size", "4",
        "--epochs", "3", "--backup-every-steps", "2", "--no-export", "--quiet",
        "--run-name", "nan", "--log-dir", str(tmp_path / "logs"),
        "--export-dir", str(tmp_path / "exported"),
    ]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(argv)
    assert stopped.value.code == train_cli.EXIT_NON_FINITE_LOSS == 3
    # 10 examples in batches of 4: step 5 is batch 2 of 3 in epoch 2.
    assert_one_line_error(
        capsys.readouterr().err,
        "loss became nan at step 5 (epoch 2, batch 2 of 3)",
        "backup of step 4",
    )
    state = json.loads((tmp_path / "exported" / "nan" / "backup" / "state.json").read_text())
    assert state["global_step"] == 4


def test_backup_refuses_non_finite_weights(tmp_path):
    from fnn_keras.training.callbacks import (
        NonFiniteLossError,
        ResumableEarlyStopping,
        TrainingBackup,
        read_backup,
    )

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    model.compile(keras.optimizers.AdamW(1e-3), "mse")
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"))
    backup = TrainingBackup(
        str(tmp_path / "backup"), 4, 1, ResumableEarlyStopping(2), checkpoint, {"a": 1}
    )
    backup.set_model(model)
    backup.save(1)
    kernel = model.get_layer("dense").kernel
    kernel.assign(kernel.numpy() * float("nan"))
    with pytest.raises(NonFiniteLossError, match="weights became NaN or infinite at step 2"):
        backup.save(2)
    state = read_backup(str(tmp_path / "backup"))
    assert state.global_step == 1
    assert state.settings == {"a": 1}


@pytest.mark.parametrize(("step", "saved"), [(4, [4]), (5, []), (6, [6]), (10, [])])
def test_backup_leaves_epoch_end_to_dev_pass(step, saved, monkeypatch):
    # 5 steps per epoch, a backup every 2 steps: steps 5 and 10 end an epoch,
    # so only `on_epoch_end` saves them, after the dev pass. A backup saved
    # before that pass would resume at the next epoch and skip the pass.
    from types import SimpleNamespace

    from fnn_keras.training.callbacks import TrainingBackup

    backup = TrainingBackup("unused", steps_per_epoch=5, every_steps=2, early_stopping=None,
                            checkpoint=None)  # fmt: skip
    steps = []
    monkeypatch.setattr(backup, "save", steps.append)
    backup.set_model(SimpleNamespace(optimizer=SimpleNamespace(iterations=np.int64(step))))
    backup.on_train_batch_end(0)
    assert steps == saved
