"""One interface over every artifact: Keras, SavedModel, TFLite and ONNX."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import tensorflow as tf

from fnn_keras.data.multilabel import (
    LABEL_THRESHOLDS_FILE,
    load_label_thresholds,
    predicted_label_mask,
)
from fnn_keras.data.pipeline import build_preprocessor, is_pair_input, string_inputs, trim_batch
from fnn_keras.data.summary import token_lengths
from fnn_keras.data.thresholds import ThresholdError, load_threshold, predicted_ids
from fnn_keras.export import parity
from fnn_keras.export.savedmodel import text_arguments
from fnn_keras.export.trained_run import ExportError, load_trained_run
from fnn_keras.models.classifier import INPUT_NAMES
from fnn_keras.tokenizer import TokenizerError, load_tokenizer, reads_text_pairs

logger = logging.getLogger(__name__)


class PredictorError(ValueError):
    """Raised when an artifact cannot be loaded for prediction."""


class _Predictor:
    """Base of the predictors: `labels`, `text_pair` and `predict(texts, batch_size)`."""

    labels: list[str]
    tokenizer: object
    text_pair: bool = False
    threshold: float | None = None
    # A multi-label model's threshold per label; `None` for single-label models.
    label_thresholds: list[float] | None = None
    # A token tagging model, with probabilities per token: not for these predictors.
    per_token: bool = False

    def label_ids(self, probabilities: np.ndarray) -> np.ndarray:
        """Return the predicted class ids: the run's threshold rule, or the most probable."""
        return predicted_ids(probabilities, self.threshold)

    def label_sets(self, probabilities: np.ndarray) -> list[list[str]]:
        """Return a multi-label model's predicted labels: each at or above its threshold."""
        mask = predicted_label_mask(probabilities, self.label_thresholds)
        return [[label for label, on in zip(self.labels, row, strict=True) if on] for row in mask]

    def predict(self, texts: list, batch_size: int = 32, lengths=None) -> np.ndarray:
        """Return class probabilities, `(len(texts), len(labels))` float32.

        `texts` holds strings, or `(text, text_pair)` tuples when
        `text_pair` is true. More texts than one batch are batched in order
        of token length, so each batch pads to a length close to its own
        texts'. The rows come back in input order. `lengths`, from
        `token_lengths`, saves tokenizing the texts again when the caller
        has them.

        Raises:
            PredictorError: Pairs given to a single-text model, or the
                reverse.
        """
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        if is_pair_input(texts) != self.text_pair:
            expected = "(text, text_pair) tuples" if self.text_pair else "strings"
            raise PredictorError(
                f"This model takes {expected}; received {type(texts[0]).__name__} inputs."
            )
        if len(texts) <= batch_size:
            return self._probabilities(texts, batch_size)
        if lengths is None:
            lengths = token_lengths(self.tokenizer, texts)
        order = np.argsort(lengths, kind="stable")
        sorted_probabilities = self._probabilities([texts[i] for i in order], batch_size)
        probabilities = np.empty_like(sorted_probabilities)
        probabilities[order] = sorted_probabilities
        return probabilities

    def _probabilities(self, texts: list[str], batch_size: int) -> np.ndarray:
        raise NotImplementedError


class KerasPredictor(_Predictor):
    """Predicts with a run's `model.keras`.

    Tokenization and the model run in one `tf.function`, traced once for
    any batch size and length. `model.predict` on a fresh `tf.data`
    pipeline traces the tokenizer again on every call, about a second each.
    """

    def __init__(self, run):
        self.run = run
        self.labels = run.labels
        self.tokenizer = run.tokenizer
        self.sequence_length = run.sequence_length
        self.text_pair = run.text_pair
        self.threshold = run.threshold
        self.label_thresholds = run.label_thresholds
        self.per_token = len(run.model.output_shape) == 3
        model, preprocessor = run.model, run.preprocessor
        spec = tf.TensorSpec([None], tf.string)

        @tf.function(input_signature=[spec, spec] if self.text_pair else [spec])
        def classify(*strings):
            strings = strings if self.text_pair else strings[0]
            return model(trim_batch(preprocessor(x=strings)), training=False)

        self._classify = classify

    def _probabilities(self, texts: list, batch_size: int) -> np.ndarray:
        batches = []
        for i in range(0, len(texts), batch_size):
            strings = string_inputs(texts[i : i + batch_size])
            strings = strings if self.text_pair else (strings,)
            batches.append(self._classify(*strings).numpy())
        return np.concatenate(batches).astype(np.float32)


class SavedModelPredictor(_Predictor):
    """Predicts with a SavedModel version directory.

    A raw-text export is called on the texts; a token-id-only export gets ids
    from the run's tokenizer files, as a client would make them.
    """

    def __init__(self, path: str, run_dir: str, labels: list[str]):
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

        self.function = tf.saved_model.load(path).signatures["serving_default"]
        self.per_token = self.function.structured_outputs["probabilities"].shape.rank == 3
        self.labels = labels
        self.preprocessor = None
        try:
            self.tokenizer, self.sequence_length = load_tokenizer(
                os.path.join(run_dir, "tokenizer")
            )
            self.text_pair = reads_text_pairs(os.path.join(run_dir, "tokenizer"))
            self.threshold = load_threshold(run_dir, labels)
            self.label_thresholds = load_label_thresholds(run_dir, labels)
        except (TokenizerError, ThresholdError) as error:
            raise PredictorError(str(error)) from None
        if self.label_thresholds is None and "label_mask" in self.function.structured_outputs:
            raise PredictorError(
                f"{path} is a multi-label model, but its run directory {run_dir} has no "
                f"{LABEL_THRESHOLDS_FILE}; restore that file."
            )
        if "text" not in self.function.structured_input_signature[1]:
            self.preprocessor = build_preprocessor(self.tokenizer, self.sequence_length)

    def _call(self, batch: list) -> np.ndarray:
        if self.preprocessor is None:
            outputs = self.function(**text_arguments(batch))
        else:
            features = trim_batch(self.preprocessor(x=string_inputs(batch)))
            outputs = self.function(**features)
        return outputs["probabilities"].numpy()

    def _probabilities(self, texts: list[str], batch_size: int) -> np.ndarray:
        outputs = [self._call(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(outputs)


class _TokenIdPredictor(_Predictor):
    """Tokenizes with the files beside a TFLite or ONNX model, as a client would."""

    def __init__(self, path: str):
        directory = os.path.dirname(os.path.abspath(path))
        try:
            tokenizer, self.sequence_length = load_tokenizer(directory)
            self.text_pair = reads_text_pairs(directory)
            with open(os.path.join(directory, "labels.json"), encoding="utf-8") as file:
                self.labels = json.load(file)
        except (TokenizerError, OSError, ValueError) as error:
            raise PredictorError(
                f"{path}: the tokenizer files beside it (tokenizer.json, vocab.txt, "
                f"labels.json) are missing or invalid: {error}"
            ) from None
        try:
            self.threshold = load_threshold(directory, self.labels)
            self.label_thresholds = load_label_thresholds(directory, self.labels)
        except ThresholdError as error:
            raise PredictorError(str(error)) from None
        self.tokenizer = tokenizer
        self.preprocessor = preprocessor = build_preprocessor(tokenizer, self.sequence_length)
        spec = tf.TensorSpec([None], tf.string)

        # Traced once: run eagerly, the tokenizer's string ops added 8 to 10 ms
        # per single text (benchmarks/latency.py, 2-core CPU).
        @tf.function(input_signature=[spec, spec] if self.text_pair else [spec])
        def tokenize(*strings):
            return preprocessor(x=strings if self.text_pair else strings[0])

        self._tokenize = tokenize

    def features(self, texts: list) -> dict:
        """Return token ids padded to the sequence length, as numpy int32 arrays."""
        strings = string_inputs(texts)
        outputs = self._tokenize(*(strings if self.text_pair else (strings,)))
        return {name: np.asarray(outputs[name], dtype=np.int32) for name in INPUT_NAMES}


class TFLitePredictor(_TokenIdPredictor):
    """Predicts with a `.tflite` file in LiteRT, one text at a time."""

    def __init__(self, path: str):
        from fnn_keras.export.tflite import TFLiteRunner

        super().__init__(path)
        self.runner = TFLiteRunner(path)
        outputs = next(iter(self.runner.runners.values())).get_output_details()
        self.per_token = len(next(iter(outputs.values()))["shape"]) == 3

    def _probabilities(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.runner(self.features(texts))


class OnnxPredictor(_TokenIdPredictor):
    """Predicts with a `.onnx` file in ONNX Runtime."""

    def __init__(self, path: str):
        import onnxruntime

        super().__init__(path)
        try:
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001  (onnxruntime raises its own classes)
            raise PredictorError(
                f"{path} is not a valid ONNX model: {str(error).splitlines()[0]}"
            ) from None
        self.per_token = len(self.session.get_outputs()[0].shape) == 3

    def _probabilities(self, texts: list[str], batch_size: int) -> np.ndarray:
        return parity.run_in_batches(
            lambda batch: self.session.run(None, batch)[0],
            self.features(texts),
            batch_size,
            trim=True,
        )


def check_ensemble_members(members: list, names: list[str]) -> None:
    """Raise `PredictorError` unless the members can be averaged.

    Every member needs the same labels in the same order, and all of them
    read single texts or all read text pairs. A warning names the members
    that have a decision threshold, because the ensemble does not apply it.

    Args:
        members: Predictors or `TrainedRun`s, each with `labels`,
            `text_pair` and `threshold`.
        names: What the user called each member, for the message.
    """
    if len(members) < 2:
        raise PredictorError(
            "--ensemble needs 2 or more runs after it; texts go before it. "
            f"Received: {', '.join(names) or 'none'}."
        )
    first, first_name = members[0], names[0]
    for member, name in zip(members[1:], names[1:], strict=True):
        if list(member.labels) != list(first.labels):
            raise PredictorError(
                f"{name} has labels {member.labels} and {first_name} has {first.labels}; "
                "ensemble members need the same labels in the same order."
            )
        if (member.label_thresholds is None) != (first.label_thresholds is None):
            raise PredictorError(
                f"{name} and {first_name} differ: one is a multi-label model and the other "
                "is not; ensemble runs of the same task."
            )
        if member.text_pair != first.text_pair:
            raise PredictorError(
                f"{name} and {first_name} differ: one reads text pairs and the other single "
                "texts; ensemble runs that read the same inputs."
            )
    tuned = [
        name
        for name, member in zip(names, members, strict=True)
        if member.threshold is not None
        or (member.label_thresholds is not None and set(member.label_thresholds) != {0.5})
    ]
    if tuned:
        rule = (
            "every label whose mean probability is at least 0.5"
            if first.label_thresholds is not None
            else "the most probable label of the mean"
        )
        logger.warning(
            "The decision thresholds of %s are not applied: the ensemble predicts %s.",
            ", ".join(tuned),
            rule,
        )


def average_probabilities(probabilities: list[np.ndarray]) -> np.ndarray:
    """Return the mean of several `(n, labels)` probability arrays, as float32.

    The mean is taken in float64, so it is the exact mean to float32
    precision.

    Example:

    ```python
    average_probabilities([np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])])  # [[0.4, 0.6]]
    ```
    """
    return np.mean(np.stack(probabilities).astype(np.float64), axis=0).astype(np.float32)


class EnsemblePredictor(_Predictor):
    """Averages the class probabilities of several predictors.

    Each member tokenizes with its own tokenizer and sequence length, so
    runs on different backbones can be combined. The predicted label is the
    most probable one under the mean; thresholds the members were tuned
    with are not applied.

    Args:
        members: Two or more predictors from `load_predictor`, with the
            same labels.
        names: What the user called each member, for error messages.

    Example:

    ```python
    ensemble = EnsemblePredictor(
        [load_predictor("run-a"), load_predictor("run-b")], ["run-a", "run-b"]
    )
    ensemble.predict(["a fine film"])
    ```
    """

    def __init__(self, members: list, names: list[str]):
        check_ensemble_members(members, names)
        self.members = list(members)
        self.names = list(names)
        first = members[0]
        self.labels = first.labels
        self.text_pair = first.text_pair
        self.tokenizer = first.tokenizer
        self.sequence_length = first.sequence_length
        self.threshold = None
        if first.label_thresholds is not None:
            self.label_thresholds = [0.5] * len(self.labels)

    def predict(self, texts: list, batch_size: int = 32, lengths=None) -> np.ndarray:
        # `lengths` come from the first member's tokenizer, so the other
        # members count their own.
        return average_probabilities(
            [
                member.predict(texts, batch_size, lengths if index == 0 else None)
                for index, member in enumerate(self.members)
            ]
        )


def count_truncated(predictor, texts: list[str], lengths=None) -> int:
    """Count the texts longer than the predictor's sequence length.

    `lengths`, from `token_lengths`, saves tokenizing the texts again. For
    an ensemble, the count of the member that truncates most.
    """
    if not texts:
        return 0
    if isinstance(predictor, EnsemblePredictor):
        return max(
            count_truncated(member, texts, lengths if index == 0 else None)
            for index, member in enumerate(predictor.members)
        )
    if lengths is None:
        lengths = token_lengths(predictor.tokenizer, texts)
    return int((np.asarray(lengths) > predictor.sequence_length).sum())


def load_predictor(artifact: str, export_dir: str = "exported"):
    """Open any artifact of a run for prediction, chosen by its path.

    Args:
        artifact: A run name or directory, a `model.keras`, a SavedModel
            version directory under the run or its `ids_only/` (the run's
            `labels.json` gives the labels), a `.tflite` or a `.onnx` file (with `tokenizer.json`,
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
        predictor = _load(artifact, export_dir)
    except ExportError as error:
        raise PredictorError(str(error)) from None
    except PredictorError:
        raise
    except (ValueError, RuntimeError) as error:
        lines = str(error).strip().splitlines() or [""]
        raise PredictorError(
            f"Failed to load {artifact}: {error.__class__.__name__}: {lines[0]}"
        ) from None
    if predictor.per_token:
        raise PredictorError(
            f"{artifact} is a token tagging model; predict finds entities with the run "
            "directory or its model.keras only, such as exported/<run>."
        )
    return predictor


def _load(artifact: str, export_dir: str):
    """Open the predictor that fits the artifact's path; see `load_predictor`."""
    if artifact.endswith(".tflite") or artifact.endswith(".onnx"):
        if not os.path.isfile(artifact):
            raise PredictorError(f"Model file not found: {artifact}")
        if artifact.endswith(".tflite"):
            return TFLitePredictor(artifact)
        return OnnxPredictor(artifact)
    if os.path.isfile(os.path.join(artifact, "saved_model.pb")):
        # `<run>/<version>` or `<run>/ids_only/<version>`.
        parent = os.path.dirname(os.path.abspath(artifact))
        run_dir = os.path.dirname(parent) if os.path.basename(parent) == "ids_only" else parent
        try:
            with open(os.path.join(run_dir, "labels.json"), encoding="utf-8") as file:
                labels = json.load(file)
        except OSError:
            raise PredictorError(
                f"{artifact}: no labels.json in its run directory {run_dir}."
            ) from None
        return SavedModelPredictor(artifact, run_dir, labels)
    return KerasPredictor(load_trained_run(artifact, export_dir))
