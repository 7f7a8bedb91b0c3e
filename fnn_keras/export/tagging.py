"""Exporting a tagging run: SavedModel, ONNX and TFLite, each checked against Keras."""

from __future__ import annotations

import json
import logging
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from fnn_keras.data.conll import read_conll
from fnn_keras.data.tagging_pipeline import align_sentences
from fnn_keras.data.words import split_words
from fnn_keras.export.exporter import format_export_report
from fnn_keras.export.onnx import OPSET, export_onnx
from fnn_keras.export.tagging_savedmodel import export_tagging_saved_model
from fnn_keras.export.tflite import (
    TFLiteRunner,
    _find_layers,
    convert_variant,
    fit_to_signature,
    non_builtin_ops,
    tflite_op_names,
)
from fnn_keras.export.trained_run import ExportError, load_trained_run
from fnn_keras.models.classifier import INPUT_NAMES
from fnn_keras.models.tagger import build_tagger, tag_probabilities
from fnn_keras.tokenizer import save_tokenizer

logger = logging.getLogger(__name__)

TAGGING_FORMATS = ("saved_model", "onnx", "tflite")


def rebuild_unrolled_tagger(model: keras.Model) -> keras.Model:
    """Rebuild a tagger whose feedback loop unrolls at static lengths, for TFLite.

    Args:
        model: A tagger from `build_tagger`.

    Returns:
        A new model with the same weights and `unroll=True`.

    Example:

    ```python
    mobile = rebuild_unrolled_tagger(model)
    ```
    """
    backbone, wrapper, feedback = _find_layers(model)
    cell = feedback.cell
    clone = build_tagger(
        backbone.__class__.from_config(backbone.get_config()),
        num_tags=model.output_shape[-1],
        feedback_units=cell.units,
        feedback_steps=cell.feedback_steps,
        bidirectional=wrapper is not None,
        feedback_dropout=cell.dropout,
        dropout=model.get_layer("head_dropout").rate,
        unroll=True,
    )
    clone.set_weights(model.get_weights())
    return clone


def compare_tags(reference: np.ndarray, probabilities: np.ndarray, mask: np.ndarray) -> dict:
    """Compare per-piece probabilities at real (unpadded) positions.

    Returns:
        `examples`, `pieces`, `max_abs_diff` and `top1_agreement` (share of
        real pieces with the same most probable tag).
    """
    real = mask.astype(bool)
    return {
        "examples": int(len(reference)),
        "pieces": int(real.sum()),
        "max_abs_diff": float(np.abs(probabilities - reference)[real].max()),
        "top1_agreement": float((probabilities.argmax(-1) == reference.argmax(-1))[real].mean()),
    }


def _file_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _padded(batches: list[np.ndarray], length: int) -> np.ndarray:
    """Stack `(rows, time, tags)` batches of different `time` into `(all rows, length, tags)`."""
    rows = []
    for batch in batches:
        rows.append(np.pad(batch, [(0, 0), (0, length - batch.shape[1]), (0, 0)]))
    return np.concatenate(rows)


def _export_saved_model(run, texts, features, reference):
    path = export_tagging_saved_model(run, run.paths.run_dir)
    loaded = tf.saved_model.load(path)
    length = run.sequence_length
    serve_ids = loaded.signatures["predict_ids"]
    ids_batches = [
        serve_ids(**{name: tf.constant(features[name][i : i + 16]) for name in INPUT_NAMES})[
            "probabilities"
        ].numpy()
        for i in range(0, len(texts), 16)
    ]
    # Raw text goes through the graph's own tokenization; it must give
    # the ids that `split_words` and the tokenizer give in Python.
    serve_text = loaded.signatures["serving_default"]
    text_outputs = [
        serve_text(text=tf.constant(texts[i : i + 16])) for i in range(0, len(texts), 16)
    ]
    text_ids = np.concatenate(
        [
            np.pad(o["token_ids"].numpy(), [(0, 0), (0, length - o["token_ids"].shape[1])])
            for o in text_outputs
        ]
    )
    mask = features["padding_mask"]
    entries = []
    for variant, probabilities in (
        ("predict_ids", _padded(ids_batches, length)),
        ("serving_default", _padded([o["probabilities"].numpy() for o in text_outputs], length)),
    ):
        entry = {
            "format": "saved_model",
            "variant": variant,
            "path": path,
            "size_bytes": _file_size(path),
            "parity": compare_tags(reference, probabilities, mask),
        }
        if variant == "serving_default":
            entry["token_ids_match"] = bool(np.array_equal(text_ids, features["token_ids"]))
        entries.append(entry)
    return entries


def _export_onnx(run, features, reference):
    import onnxruntime

    directory = run.paths.onnx_dir
    os.makedirs(directory, exist_ok=True)
    _write_client_files(run, directory)
    path = export_onnx(run.model, os.path.join(directory, "model.onnx"))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    batches = []
    rows = len(features["token_ids"])
    for first in range(0, rows, 16):
        longest = int(features["padding_mask"][first : first + 16].sum(axis=1).max())
        inputs = {name: features[name][first : first + 16, :longest] for name in INPUT_NAMES}
        batches.append(session.run(None, inputs)[0])
    probabilities = _padded(batches, run.sequence_length)
    return [
        {
            "format": "onnx",
            "variant": f"opset{OPSET}",
            "path": path,
            "size_bytes": _file_size(path),
            "parity": compare_tags(reference, probabilities, features["padding_mask"]),
        }
    ]


def _export_tflite(run, features, reference):
    directory = run.paths.tflite_dir
    os.makedirs(directory, exist_ok=True)
    _write_client_files(run, directory)
    path = os.path.join(directory, "model_float32.tflite")
    convert_variant(rebuild_unrolled_tagger(run.model), path, "float32", run.sequence_length)
    ops = tflite_op_names(path)
    runner = TFLiteRunner(path)
    length = run.sequence_length
    probabilities = np.zeros_like(reference)
    for row in range(len(features["token_ids"])):
        inputs = fit_to_signature(
            {name: features[name][row : row + 1] for name in INPUT_NAMES}, runner.lengths
        )
        width = inputs["token_ids"].shape[1]
        outputs = runner.runners[width](**inputs)
        probabilities[row, : min(width, length)] = next(iter(outputs.values()))[0][:length]
    return [
        {
            "format": "tflite",
            "variant": "float32",
            "path": path,
            "size_bytes": _file_size(path),
            "signature_lengths": runner.lengths,
            "ops": ops,
            "non_builtin_ops": non_builtin_ops(ops),
            "parity": compare_tags(reference, probabilities, features["padding_mask"]),
        }
    ]


def _write_client_files(run, directory: str) -> None:
    save_tokenizer(run.tokenizer, directory, run.sequence_length)
    shutil.copyfile(run.paths.labels, os.path.join(directory, "labels.json"))


def export_tagging_run(
    run_dir: str, texts: list[str], formats: tuple[str, ...] = TAGGING_FORMATS
) -> dict:
    """Export a tagging run to each format and compare every artifact with Keras.

    The parity texts are split into words with `split_words` and aligned
    as `predict` aligns them. Each artifact's per-piece probabilities are
    compared with the Keras model's at the real pieces. A format that
    fails is recorded with its error and the others still run. The report
    goes to `export_report.json` and `export_report.md` in the run
    directory.

    Args:
        run_dir: The run directory.
        texts: Raw texts for the parity check, such as dev sentences
            joined back together.
        formats: Any of `TAGGING_FORMATS`.

    Returns:
        The report; `report["failed"]` lists what failed.

    Example:

    ```python
    report = export_tagging_run("exported/ner", ["张三在北京工作"])
    ```
    """
    unknown = sorted(set(formats) - set(TAGGING_FORMATS))
    if not formats or unknown:
        raise ExportError(
            f"Invalid export formats for a tagging run: {', '.join(formats) or 'none'}. "
            f"Valid: {', '.join(TAGGING_FORMATS)}."
        )
    if not texts:
        raise ExportError("The parity check needs at least one text.")
    run = load_trained_run(run_dir)
    words = [
        [word.text for word in split_words(text, run.tokenizer.split_on_cjk)] for text in texts
    ]
    aligned = align_sentences(run.tokenizer, words, run.sequence_length)
    features = aligned.features()
    reference = tag_probabilities(run.model, features, 16)

    steps = {
        "saved_model": lambda: _export_saved_model(run, texts, features, reference),
        "onnx": lambda: _export_onnx(run, features, reference),
        "tflite": lambda: _export_tflite(run, features, reference),
    }
    artifacts = []
    for name in formats:
        try:
            artifacts.extend(steps[name]())
        except Exception as error:  # noqa: BLE001  (one failed format keeps the others)
            lines = str(error).strip().splitlines() or [""]
            logger.error("%s export failed: %s: %s", name, error.__class__.__name__, lines[-1])
            artifacts.append({"format": name, "error": f"{error.__class__.__name__}: {lines[-1]}"})
    report = {
        "run": run.paths.run_name,
        "task": "tagging",
        "sequence_length": run.sequence_length,
        "parity_examples": len(texts),
        "keras_accuracy": None,
        "artifacts": artifacts,
        "failed": [
            a["format"] + (f"/{a['variant']}" if "variant" in a else "")
            for a in artifacts
            if "error" in a
        ],
    }
    with open(run.paths.export_report, "w", encoding="utf-8") as file:
        json.dump(report, file, ensure_ascii=False, indent=2)
    with open(os.path.splitext(run.paths.export_report)[0] + ".md", "w", encoding="utf-8") as file:
        file.write(format_export_report(report))
    return report


def tagging_parity_texts(run, path: str | None, limit: int = 0) -> list[str]:
    """Read a CoNLL file the way the run read its data, as texts for the parity check.

    Args:
        run: A tagging run from `load_trained_run`.
        path: The CoNLL file, or `None` for the run's dev file.
        limit: Keep only the first N sentences; 0 keeps 64.

    Returns:
        Each sentence's tokens joined with spaces, which `split_words`
        splits at again.

    Raises:
        ExportError: No file is given and the run's dev file is not here.
        DataError: The file cannot be read.

    Example:

    ```python
    texts = tagging_parity_texts(load_trained_run("ner"), None)
    ```
    """
    path = path or run.dev_path
    if path is None:
        missing = (
            f"The run's dev file {run.data.dev!r} does not exist here"
            if run.data.dev
            else "The run names no dev file"
        )
        raise ExportError(f"{missing}; pass --data FILE.")
    sentences = read_conll(path, run.data.encoding, run.data.on_bad_row)
    return [" ".join(tokens) for tokens in sentences.tokens[: limit or 64]]
