"""The directory layout of a run: one place decides where each output goes."""

from __future__ import annotations

import dataclasses
import os

from fnn_keras.config import OutputConfig


@dataclasses.dataclass
class RunPaths:
    """Paths of one run's outputs. Every writer takes its paths from here.

    Attributes:
        run_dir: `<export_dir>/<run_name>`: config, labels, model, metrics,
            checkpoints, and the numbered SavedModel versions TF Serving
            loads.
        log_dir: `<log_dir>/<run_name>`: TensorBoard event files.
    """

    run_name: str
    run_dir: str
    log_dir: str

    @property
    def config(self) -> str:
        return os.path.join(self.run_dir, "config.yaml")

    @property
    def labels(self) -> str:
        return os.path.join(self.run_dir, "labels.json")

    @property
    def model(self) -> str:
        return os.path.join(self.run_dir, "model.keras")

    @property
    def tokenizer(self) -> str:
        return os.path.join(self.run_dir, "tokenizer")

    @property
    def export_report(self) -> str:
        return os.path.join(self.run_dir, "export_report.json")

    @property
    def models_config(self) -> str:
        return os.path.join(self.run_dir, "models.config")

    @property
    def ids_only_dir(self) -> str:
        return os.path.join(self.run_dir, "ids_only")

    @property
    def tflite_dir(self) -> str:
        return os.path.join(self.run_dir, "tflite")

    @property
    def onnx_dir(self) -> str:
        return os.path.join(self.run_dir, "onnx")

    @property
    def best_checkpoint(self) -> str:
        return os.path.join(self.run_dir, "checkpoints", "best.weights.h5")

    @property
    def backup(self) -> str:
        return os.path.join(self.run_dir, "backup")

    @property
    def data_summary(self) -> str:
        return os.path.join(self.run_dir, "data_summary.json")


def run_paths(output: OutputConfig, run_name: str) -> RunPaths:
    """Lay out the directories of the run `run_name`.

    Args:
        output: The output section of the config.
        run_name: Name of the run.

    Returns:
        The `RunPaths`; nothing is created on disk.

    Example:

    ```python
    paths = run_paths(OutputConfig(), "demo")
    paths.model  # "exported/demo/model.keras"
    ```
    """
    return RunPaths(
        run_name=run_name,
        run_dir=os.path.join(output.export_dir, run_name),
        log_dir=os.path.join(output.log_dir, run_name),
    )
