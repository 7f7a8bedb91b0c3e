"""Exporting a trained run to every format and proving each equals Keras."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import tensorflow as tf

from fnn_keras.data.multilabel import LABEL_THRESHOLDS_FILE, predicted_label_mask
from fnn_keras.data.thresholds import THRESHOLDS_FILE, predicted_ids
from fnn_keras.export import parity
from fnn_keras.export.onnx import OPSET, export_onnx
from fnn_keras.export.savedmodel import export_saved_model, text_arguments, write_models_config
from fnn_keras.export.tflite import (
    VARIANTS,
    TFLiteRunner,
    export_tflite_variants,
    signature_name,
    tflite_op_names,
)
from fnn_keras.export.trained_run import ExportError, TrainedRun
from fnn_keras.models.classifier import INPUT_NAMES
from fnn_keras.tokenizer import save_tokenizer

logger = logging.getLogger(__name__)

FORMATS = ("saved_model", "tflite", "onnx")
DEFAULT_TFLITE_VARIANTS = ("float32", "float16", "dynamic_int8", "full_int8")
# Calibration texts for full-integer quantization.
CALIBRATION_EXAMPLES = 100
# Parity bar per TFLite variant against the Keras model: the largest
# probability difference for float32 and top-1 agreement for the quantized
# ones. No variant may lose more than one accuracy point.
TFLITE_BARS = {
    "float32": {"max_abs_diff": 1e-4},
    "float16": {"top1_agreement": 0.99},
    "dynamic_int8": {"top1_agreement": 0.99},
    "full_int8": {"top1_agreement": 0.97},
}
MAX_ACCURACY_DROP = 0.01
# Variants shipped only when they meet their bar; the others always ship and
# the report flags a miss.
CONDITIONAL_VARIANTS = ("full_int8",)


def check_bar(variant: str, result: dict) -> list[str]:
    """Return the ways a TFLite variant's parity misses its bar (empty if none)."""
    misses = []
    bar = TFLITE_BARS[variant]
    if "max_abs_diff" in bar and result["max_abs_diff"] > bar["max_abs_diff"]:
        misses.append(f"max abs diff {result['max_abs_diff']:.2e} > {bar['max_abs_diff']:.0e}")
    if "top1_agreement" in bar:
        # A multi-label model is held to the same share of identical label sets.
        name = "label_set_agreement" if "label_set_agreement" in result else "top1_agreement"
        if result[name] < bar["top1_agreement"]:
            what = name.replace("_", " ").replace("top1", "top-1")
            misses.append(f"{what} {result[name]:.4f} < {bar['top1_agreement']}")
    if "accuracy" in result:
        drop = result["keras_accuracy"] - result["accuracy"]
        # The tolerance keeps exactly one point (say 0.88 - 0.87) within the bar.
        if drop > MAX_ACCURACY_DROP + 1e-9:
            misses.append(f"accuracy drop {drop:.4f} > {MAX_ACCURACY_DROP}")
    return misses


def saved_model_ops(path: str) -> list[str]:
    """Return the op types in a SavedModel graph that core TensorFlow lacks.

    These come from TensorFlow Text (the in-graph tokenizer); a server must
    register them to load the SavedModel.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as file:
        saved_model.ParseFromString(file.read())
    ops = set()
    for graph in saved_model.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    core = set(dir(tf.raw_ops))
    return sorted(op for op in ops if op not in core)


def _tensor_specs(specs) -> list[dict]:
    return [
        {"name": name, "dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for name, spec in sorted(specs.items())
    ]


def _file_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total


def _write_client_files(run: TrainedRun, directory: str) -> None:
    save_tokenizer(run.tokenizer, directory, run.sequence_length, run.text_pair)
    shutil.copyfile(run.paths.labels, os.path.join(directory, "labels.json"))
    thresholds = os.path.join(directory, THRESHOLDS_FILE)
    if run.threshold is None:
        # A re-export after the run's thresholds were removed must not keep old ones.
        if os.path.exists(thresholds):
            os.remove(thresholds)
    else:
        shutil.copyfile(os.path.join(run.paths.run_dir, THRESHOLDS_FILE), thresholds)
    if run.multilabel:
        shutil.copyfile(
            os.path.join(run.paths.run_dir, LABEL_THRESHOLDS_FILE),
            os.path.join(directory, LABEL_THRESHOLDS_FILE),
        )


def _export_saved_model(run, texts, features, reference, label_ids, warmup_texts):
    path = export_saved_model(
        run.model,
        run.preprocessor,
        run.labels,
        run.paths.run_dir,
        warmup_texts=warmup_texts,
        text_pair=run.text_pair,
        threshold=run.threshold,
        label_thresholds=run.label_thresholds,
        label_delimiter=run.data.label_delimiter,
    )
    version = int(os.path.basename(path))
    ids_path = export_saved_model(
        run.model,
        None,
        run.labels,
        run.paths.ids_only_dir,
        version=version,
        threshold=run.threshold,
        label_thresholds=run.label_thresholds,
        label_delimiter=run.data.label_delimiter,
    )
    write_models_config(run.paths.models_config, run.paths.run_name)
    loaded = tf.saved_model.load(path)
    loaded_ids = tf.saved_model.load(ids_path)
    entries = []
    checks = (
        ("serving_default", path, loaded),
        ("predict_ids", path, loaded),
        ("ids_only", ids_path, loaded_ids),
    )
    for signature, artifact_path, artifact in checks:
        name = "predict_ids" if signature == "ids_only" else signature
        function = artifact.signatures[name]
        label_rule = None
        if signature == "serving_default":
            outputs = [
                function(**text_arguments(texts[i : i + 32])) for i in range(0, len(texts), 32)
            ]
            probabilities = np.concatenate([output["probabilities"].numpy() for output in outputs])
            # The served labels must follow the run's decision rule on the served probabilities.
            if run.multilabel:
                served = np.concatenate([output["label_mask"].numpy() for output in outputs])
                expected = predicted_label_mask(probabilities, run.label_thresholds)
            else:
                served = np.concatenate([output["label_id"].numpy() for output in outputs])
                expected = predicted_ids(probabilities, run.threshold)
            label_rule = bool(np.array_equal(served, expected.astype(served.dtype)))
        else:

            def run_ids(batch, function=function):
                tensors = {name: tf.constant(value) for name, value in batch.items()}
                return function(**tensors)["probabilities"]

            probabilities = parity.run_in_batches(run_ids, features, 32, trim=True)
        entries.append(
            {
                "format": "saved_model",
                "variant": signature,
                "path": artifact_path,
                "size_bytes": _file_size(artifact_path),
                "inputs": _tensor_specs(function.structured_input_signature[1]),
                "outputs": _tensor_specs(function.structured_outputs),
                "parity": parity.compare(reference, probabilities, label_ids, run.label_thresholds),
            }
        )
        if label_rule is not None:
            entries[-1]["labels_follow_decision_rule"] = label_rule
    for entry in entries:
        entry["non_core_ops"] = saved_model_ops(entry["path"])
    return entries


def _tflite_tensor(detail: dict) -> dict:
    return {"dtype": np.dtype(detail["dtype"]).name, "shape": detail["shape"].tolist()}


def _remove_old_files(directory: str, extension: str) -> None:
    # A re-export replaces the whole format, so files of variants that are
    # not exported again do not linger without a report entry.
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(extension):
                os.remove(os.path.join(directory, name))


def _export_tflite(run, features, reference, label_ids, variants, calibration_texts):
    directory = run.paths.tflite_dir
    _remove_old_files(directory, ".tflite")
    _write_client_files(run, directory)

    def representative_inputs():
        calibration = parity.fixed_length_features(run.preprocessor, calibration_texts)
        for i in range(len(calibration_texts)):
            yield {name: value[i : i + 1] for name, value in calibration.items()}

    results = export_tflite_variants(
        run.model, directory, run.sequence_length, list(variants), representative_inputs
    )
    entries = []
    for variant, result in results.items():
        entry = {"format": "tflite", "variant": variant, "description": VARIANTS[variant]}
        if "error" in result:
            entry["error"] = result["error"]
            entries.append(entry)
            continue
        path = result["path"]
        runner = TFLiteRunner(path)
        probabilities = runner(features)
        entry.update(
            {
                "path": path,
                "size_bytes": _file_size(path),
                "signatures": {
                    signature_name(length): {
                        "inputs": {
                            name: _tflite_tensor(detail)
                            for name, detail in signature.get_input_details().items()
                        },
                        "outputs": {
                            name: _tflite_tensor(detail)
                            for name, detail in signature.get_output_details().items()
                        },
                    }
                    for length, signature in runner.runners.items()
                },
                "ops": tflite_op_names(path),
                "parity": parity.compare(reference, probabilities, label_ids, run.label_thresholds),
            }
        )
        entry["bar_misses"] = check_bar(variant, entry["parity"])
        if entry["bar_misses"]:
            logger.warning(
                "TFLite %s misses its bar on %d texts: %s",
                variant,
                len(probabilities),
                "; ".join(entry["bar_misses"]),
            )
        if variant in CONDITIONAL_VARIANTS and entry["bar_misses"]:
            # Kept out of the export directory, so no app picks it up.
            os.remove(path)
            entry["not_shipped"] = "misses its bar: " + "; ".join(entry["bar_misses"])
        entries.append(entry)
    return entries


def _export_onnx(run, features, reference, label_ids):
    import onnx
    import onnxruntime

    directory = run.paths.onnx_dir
    _remove_old_files(directory, ".onnx")
    _write_client_files(run, directory)
    path = export_onnx(run.model, os.path.join(directory, "model.onnx"))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run_session(batch):
        return session.run(None, {name: batch[name] for name in INPUT_NAMES})[0]

    checks = {
        "batch_32_longest_in_batch": parity.run_in_batches(run_session, features, 32, trim=True),
        "batch_1_unpadded": parity.run_in_batches(run_session, features, 1, trim=True),
        f"batch_32_padded_to_{run.sequence_length}": parity.run_in_batches(
            run_session, features, 32, trim=False
        ),
    }
    graph = onnx.load(path).graph
    ops = sorted({node.op_type for node in graph.node})
    entry = {
        "format": "onnx",
        "variant": f"opset{OPSET}",
        "path": path,
        "size_bytes": _file_size(path),
        "inputs": [
            {"name": i.name, "dtype": i.type, "shape": [str(d) for d in i.shape]}
            for i in session.get_inputs()
        ],
        "outputs": [
            {"name": o.name, "dtype": o.type, "shape": [str(d) for d in o.shape]}
            for o in session.get_outputs()
        ],
        "ops": ops,
        "string_ops": [op for op in ops if "String" in op or op == "Tokenizer"],
        "parity": parity.compare(
            reference, checks["batch_32_longest_in_batch"], label_ids, run.label_thresholds
        ),
        "parity_by_shape": {
            name: parity.compare(reference, probabilities, label_ids, run.label_thresholds)
            for name, probabilities in checks.items()
        },
    }
    return [entry]


def export_run(
    run: TrainedRun,
    texts: list,
    label_ids: list[int] | None = None,
    formats: tuple[str, ...] = FORMATS,
    tflite_variants: tuple[str, ...] = DEFAULT_TFLITE_VARIANTS,
    calibration_texts: list | None = None,
) -> dict:
    """Export a run to each format and compare every artifact with Keras.

    A format or TFLite variant that fails is recorded in the report with its
    error, and the others still run. The report is written to
    `export_report.json` and `export_report.md` in the run directory.

    Args:
        run: The run from `load_trained_run`.
        texts: Texts for the parity check (and the first few for TF Serving
            warmup), or `(text, text_pair)` tuples for a sentence-pair run.
        label_ids: Their class ids, for accuracy; `None` when unlabelled.
        formats: Any of `FORMATS`.
        tflite_variants: Any of `tflite.VARIANTS`.
        calibration_texts: Training texts for `full_int8`; defaults to
            `texts`.

    Returns:
        The report as a dict; `report["failed"]` lists what failed.

    Example:

    ```python
    report = export_run(load_trained_run("my-run"), dev_texts, dev_label_ids)
    ```
    """
    if not formats:
        raise ExportError(f"No export format given. Valid: {', '.join(FORMATS)}.")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(
            f"Unknown export format(s): {', '.join(unknown)}. Valid: {', '.join(FORMATS)}."
        )
    bad_variants = sorted(set(tflite_variants) - set(VARIANTS))
    if bad_variants:
        raise ExportError(
            f"Unknown TFLite variant(s): {', '.join(bad_variants)}. Valid: {', '.join(VARIANTS)}."
        )
    if not texts:
        raise ExportError("The parity check needs at least one text.")

    # Accuracy compares the most probable label with one true label, so
    # multi-label runs compare probabilities only.
    labels = None if label_ids is None or run.multilabel else np.asarray(label_ids)
    reference = parity.keras_probabilities(run.model, run.preprocessor, texts)
    features = parity.fixed_length_features(run.preprocessor, texts)
    calibration = (calibration_texts or texts)[:CALIBRATION_EXAMPLES]

    artifacts = []
    steps = {
        "saved_model": lambda: _export_saved_model(
            run, texts, features, reference, labels, texts[:5]
        ),
        "tflite": lambda: _export_tflite(
            run, features, reference, labels, tflite_variants, calibration
        ),
        "onnx": lambda: _export_onnx(run, features, reference, labels),
    }
    for name in formats:
        try:
            artifacts.extend(steps[name]())
        except Exception as error:  # noqa: BLE001  (one failed format keeps the others)
            lines = str(error).strip().splitlines() or [""]
            logger.error("%s export failed: %s: %s", name, error.__class__.__name__, lines[-1])
            artifacts.append({"format": name, "error": f"{error.__class__.__name__}: {lines[-1]}"})

    report = {
        "run": run.paths.run_name,
        "sequence_length": run.sequence_length,
        "parity_examples": len(texts),
        "keras_accuracy": None
        if labels is None
        else float((reference.argmax(axis=1) == labels).mean()),
        "truncation": "waterfall (core TensorFlow ops; RoundRobinTrim is not used)",
        "artifacts": artifacts,
        "failed": [
            f"{a['format']}" + (f"/{a['variant']}" if "variant" in a else "")
            for a in artifacts
            if "error" in a
        ],
    }
    with open(run.paths.export_report, "w", encoding="utf-8") as file:
        json.dump(report, file, ensure_ascii=False, indent=2)
    with open(os.path.splitext(run.paths.export_report)[0] + ".md", "w", encoding="utf-8") as file:
        file.write(format_export_report(report))
    return report


def artifact_lines(report: dict) -> list[str]:
    """Describe each artifact of a report in one line: ok, skipped or FAILED.

    Example:

    ```python
    for line in artifact_lines(report):
        print(line)
    ```
    """
    lines = []
    for entry in report["artifacts"]:
        name = entry["format"] + (f" {entry['variant']}" if "variant" in entry else "")
        if "error" in entry:
            lines.append(f"FAILED  {name}: {entry['error']}")
        elif "not_shipped" in entry:
            lines.append(f"skipped {name}: {entry['not_shipped']}")
        else:
            result = entry["parity"]
            lines.append(
                f"ok      {name}: {entry['path']}  max abs diff {result['max_abs_diff']:.2e}, "
                f"top-1 agreement {result['top1_agreement']:.4f}"
            )
    return lines


def failure_message(report: dict) -> str | None:
    """Return the one-line error for a report with failed exports, else `None`."""
    if not report["failed"]:
        return None
    return (
        f"{len(report['failed'])} export(s) failed: {', '.join(report['failed'])}; "
        "the others are kept and listed above."
    )


def format_export_report(report: dict) -> str:
    """Render an export report as a Markdown table.

    Example:

    ```python
    print(format_export_report(report))
    ```
    """
    lines = [
        f"# Export report for run {report['run']}",
        "",
        f"Parity on {report['parity_examples']} texts against the Keras model"
        + (
            f" (Keras accuracy {report['keras_accuracy']:.4f})."
            if report["keras_accuracy"] is not None
            else "."
        ),
        "",
        "| artifact | size (MB) | max abs diff | top-1 agreement | accuracy | note |",
        "|---|---|---|---|---|---|",
    ]
    for entry in report["artifacts"]:
        name = entry["format"] + (f" {entry['variant']}" if "variant" in entry else "")
        if "error" in entry:
            lines.append(f"| {name} | | | | | failed: {entry['error']} |")
            continue
        result = entry["parity"]
        accuracy = f"{result['accuracy']:.4f}" if "accuracy" in result else ""
        note = ""
        if entry.get("non_core_ops"):
            note = "TF Text ops: " + ", ".join(entry["non_core_ops"])
        if entry.get("bar_misses"):
            note = "misses its bar: " + "; ".join(entry["bar_misses"])
        if entry.get("not_shipped"):
            note = "not shipped, " + entry["not_shipped"]
        lines.append(
            f"| {name} | {entry['size_bytes'] / 1e6:.1f} | {result['max_abs_diff']:.2e} "
            f"| {result['top1_agreement']:.4f} | {accuracy} | {note} |"
        )
    return "\n".join(lines) + "\n"
