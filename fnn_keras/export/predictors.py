"""One interface over every artifact: Keras, SavedModel, TFLite and ONNX."""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from fnn_keras.backbones import BackboneError, load_tokenizer
from fnn_keras.data.pipeline import build_preprocessor
from fnn_keras.export import parity
from fnn_keras.export.trained_run import ExportError, load_trained_run


class PredictorError(ValueError):
    """Raised when an artifact cannot be loaded for prediction."""


class KerasPredictor:
    """Predicts with a run's `model.keras`."""

    def __init__(self, run):
        self.run = run
        self.labels = run.labels

    def predict(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        return parity.keras_probabilities(self.run.model, self.run.preprocessor, texts, batch_size)


class SavedModelPredictor:
    """Predicts with a SavedModel's `serving_default` signature on raw text."""

    def __init__(self, path: str, labels: list[str]):
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

        self.function = tf.saved_model.load(path).signatures["serving_default"]
        self.labels = labels

    def predict(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        outputs = [
            self.function(text=tf.constant(texts[i : i + batch_size], tf.string))[
                "probabilities"
            ].numpy()
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0, len(self.labels)), np.float32)


class _TokenIdPredictor:
    """Tokenizes with the files beside a TFLite or ONNX model, as a client would."""

    def __init__(self, path: str):
        directory = os.path.dirname(os.path.abspath(path))
        try:
            tokenizer, self.sequence_length = load_tokenizer(directory)
            with open(os.path.join(directory, "labels.json"), encoding="utf-8") as file:
                self.labels = json.load(file)
        except (BackboneError, OSError, ValueError) as error:
            raise PredictorError(
                f"{path}: the tokenizer files beside it (tokenizer.json, vocab.txt, "
                f"labels.json) are missing or invalid: {error}"
            ) from None
        self.preprocessor = build_preprocessor(tokenizer, self.sequence_length)

    def features(self, texts: list[str]) -> dict:
        return parity.fixed_length_features(self.preprocessor, texts)


class TFLitePredictor(_TokenIdPredictor):
    """Predicts with a `.tflite` file in LiteRT, one text at a time."""

    def __init__(self, path: str):
        from fnn_keras.export.tflite import TFLiteRunner

        super().__init__(path)
        self.runner = TFLiteRunner(path)

    def predict(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        return self.runner(self.features(texts))


class OnnxPredictor(_TokenIdPredictor):
    """Predicts with a `.onnx` file in ONNX Runtime."""

    def __init__(self, path: str):
        import onnxruntime

        super().__init__(path)
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def predict(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        return parity.run_in_batches(
            lambda batch: self.session.run(None, batch)[0],
            self.features(texts),
            batch_size,
            trim=True,
        )


def load_predictor(artifact: str, export_dir: str = "exported"):
    """Open any artifact of a run for prediction, chosen by its path.

    Args:
        artifact: A run name or directory, a `model.keras`, a SavedModel
            version directory (its run directory's `labels.json` gives the
            labels), a `.tflite` or a `.onnx` file (with `tokenizer.json`,
            `vocab.txt` and `labels.json` beside it).
        export_dir: Root of run directories, for run names.

    Returns:
        An object with `labels` and `predict(texts, batch_size)`.

    Raises:
        PredictorError: The artifact is missing or unreadable.

    Example:

    ```python
    predictor = load_predictor("exported/my-run/tflite/model_float32.tflite")
    predictor.predict(["a fine film"])
    ```
    """
    try:
        if artifact.endswith(".tflite") or artifact.endswith(".onnx"):
            if not os.path.isfile(artifact):
                raise PredictorError(f"Model file not found: {artifact}")
            if artifact.endswith(".tflite"):
                return TFLitePredictor(artifact)
            return OnnxPredictor(artifact)
        if os.path.isfile(os.path.join(artifact, "saved_model.pb")):
            labels_path = os.path.join(os.path.dirname(os.path.abspath(artifact)), "labels.json")
            try:
                with open(labels_path, encoding="utf-8") as file:
                    labels = json.load(file)
            except OSError:
                raise PredictorError(
                    f"{artifact}: no labels.json in its run directory {os.path.dirname(labels_path)}."
                ) from None
            return SavedModelPredictor(artifact, labels)
        return KerasPredictor(load_trained_run(artifact, export_dir))
    except ExportError as error:
        raise PredictorError(str(error)) from None
    except PredictorError:
        raise
    except (ValueError, RuntimeError) as error:
        lines = str(error).strip().splitlines() or [""]
        raise PredictorError(
            f"Failed to load {artifact}: {error.__class__.__name__}: {lines[0]}"
        ) from None
