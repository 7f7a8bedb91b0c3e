import os
import signal

import keras
import pytest

from fnn_keras.config import config_from_dict
from fnn_keras.training import trainer


class InterruptAfterEpoch(keras.callbacks.Callback):
    """Send this process SIGINT, as Ctrl-C does, when an epoch ends."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


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
        # After BackupAndRestore has saved the end of epoch 2 (index 1).
        return build_callbacks(**kwargs) + [InterruptAfterEpoch(1)]

    monkeypatch.setattr(trainer, "build_callbacks", callbacks_with_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, verbose=0)
    run_dir = tmp_path / "exported" / "resumed"
    assert os.path.isfile(run_dir / "backup" / "training_metadata.json")
    assert not os.path.exists(run_dir / "model.keras")

    monkeypatch.setattr(trainer, "build_callbacks", build_callbacks)
    result = trainer.train(config, verbose=0)
    assert result.epochs_run == 1
    assert os.path.isfile(run_dir / "model.keras")
    assert not os.path.exists(run_dir / "backup")
