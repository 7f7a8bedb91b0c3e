"""Inference latency of every artifact, and the machine's matrix-multiply rate.

    python -m benchmarks.latency PROTOCOL_JSON OUTPUT_JSON
    python -m benchmarks.latency --ceiling OUTPUT_JSON

The latency run builds the default classifier on the MiniLM backbone,
saves it as a run and exports it with `fnn_keras.export.exporter`, as
`python -m fnn_keras.train` does. Latency does not depend on the weights, so
the head stays untrained. Each artifact is then timed through the
predictor that `python -m fnn_keras.predict` uses (text in, probabilities
out), and through its bare model call (token ids in).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import Protocol, load_dev_texts, peak_memory_mb, write_json

MATMUL_SIZE = 2048


def _best_rate(run_once, flops: float, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run_once()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def matmul_ceiling() -> dict:
    """Measure float32 matrix-multiply GFLOP/s with TensorFlow (and PyTorch if installed).

    Each measure is the best of 5 repeats of 10 products of two
    2048 x 2048 matrices.
    """
    import tensorflow as tf

    n, count = MATMUL_SIZE, 10
    flops = 2.0 * n**3 * count
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])

    # Each product in the chain needs the one before, so no graph
    # optimization can merge or skip one. `b` is scaled to keep the values
    # finite.
    b = b / n**0.5

    @tf.function
    def products(x):
        for _ in range(count):
            x = tf.matmul(x, b)
        return tf.reduce_sum(x)

    products(a).numpy()
    rates = {"tensorflow": _best_rate(lambda: products(a).numpy(), flops)}
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(os.cpu_count() or 1)
        ta, tb = torch.randn(n, n), torch.randn(n, n) / n**0.5

        def torch_products():
            x = ta
            for _ in range(count):
                x = torch.mm(x, tb)
            return float(x.sum())

        torch_products()
        rates["torch"] = _best_rate(torch_products, flops)
    return {
        "matrix": f"{n}x{n} float32",
        "gflops": rates,
        "ceiling_gflops": max(rates.values()),
        "cpu_count": os.cpu_count(),
    }


def _percentiles(seconds: list[float]) -> dict:
    milliseconds = np.asarray(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(milliseconds, 50)),
        "p95_ms": float(np.percentile(milliseconds, 95)),
        "calls": len(seconds),
    }


def _time_calls(function, inputs: list, warmup: int = 3) -> dict:
    for value in inputs[:warmup]:
        function(value)
    seconds = []
    for value in inputs:
        start = time.perf_counter()
        function(value)
        seconds.append(time.perf_counter() - start)
    return _percentiles(seconds)


def _build_run(protocol: Protocol, run_dir: str):
    import keras

    from fnn_keras.backbones import load_backbone
    from fnn_keras.config import Config
    from fnn_keras.data.labels import LabelVocabulary
    from fnn_keras.layout import RunPaths
    from fnn_keras.models.classifier import classifier_from_config
    from fnn_keras.tokenizer import save_tokenizer

    config = Config()
    keras.utils.set_random_seed(protocol.seed)
    bundle = load_backbone(config.model.backbone, seed=protocol.seed)
    model = classifier_from_config(config.model, bundle.backbone, 2, seed=protocol.seed)
    paths = RunPaths(os.path.basename(run_dir), run_dir, "")
    os.makedirs(run_dir, exist_ok=True)
    model.save(paths.model)
    LabelVocabulary(["0", "1"]).save(paths.labels)
    save_tokenizer(bundle.tokenizer, paths.tokenizer, protocol.sequence_length)


def latency_rows(protocol: Protocol) -> dict:
    """Export the default classifier to every format and time each one."""
    import tensorflow as tf

    from fnn_keras.data.pipeline import trim_batch
    from fnn_keras.export import parity
    from fnn_keras.export.exporter import export_run
    from fnn_keras.export.predictors import load_predictor
    from fnn_keras.export.trained_run import load_trained_run

    dev = load_dev_texts(protocol)
    singles = [[text] for text in dev[: protocol.latency_texts]]
    size = protocol.batch_size
    batches = [dev[i * size : (i + 1) * size] for i in range(protocol.latency_batches)]

    run_dir = os.path.join(tempfile.mkdtemp(prefix="fnn-bench-"), "bench-run")
    _build_run(protocol, run_dir)
    run = load_trained_run(run_dir)
    report = export_run(run, dev[:64], tflite_variants=("float32", "dynamic_int8"))
    if report["failed"]:
        raise SystemExit(f"error: exports failed: {', '.join(report['failed'])}")
    paths = {"keras": run_dir}
    for entry in report["artifacts"]:
        if entry.get("variant") == "serving_default":
            paths["saved_model"] = entry["path"]
        elif entry["format"] == "tflite":
            paths[f"tflite_{entry['variant']}"] = entry["path"]
        elif entry["format"] == "onnx":
            paths["onnx"] = entry["path"]

    def tokenized(texts):
        features = trim_batch(run.preprocessor(tf.constant(texts)))
        return {name: value.numpy() for name, value in features.items()}

    def keras_predict(texts):
        return run.model.predict(tokenized(texts), verbose=0)

    # The baseline: what a Keras user writes, `model.predict` on the
    # preprocessor's output.
    rows = {
        "keras_predict": {
            "artifact": "model.keras",
            "one_text": _time_calls(keras_predict, singles),
            "batch": _time_calls(keras_predict, batches),
            "one_text_model": _time_calls(
                lambda f: run.model.predict(f, verbose=0), [tokenized(t) for t in singles]
            ),
        }
    }
    for name, path in paths.items():
        predictor = load_predictor(path)
        row = {
            "artifact": os.path.relpath(path, run_dir),
            "one_text": _time_calls(lambda texts, p=predictor: p.predict(texts, size), singles),
            "batch": _time_calls(lambda texts, p=predictor: p.predict(texts, size), batches),
        }
        # The bare model call on token ids; the SavedModel signature takes
        # raw text and the Keras predictor tokenizes inside its graph.
        if name.startswith("tflite") or name == "onnx":
            fixed = [parity.fixed_length_features(predictor.preprocessor, t) for t in singles]
            if name == "onnx":
                row["one_text_model"] = _time_calls(
                    lambda f, p=predictor: p.session.run(None, parity.trimmed(f, 0, 1)), fixed
                )
            else:
                row["one_text_model"] = _time_calls(lambda f, p=predictor: p.runner(f), fixed)
        rows[name] = row
    return {"rows": rows, "export_sequence_length": run.sequence_length}


def main(argv: list[str]) -> None:
    if argv[0] == "--ceiling":
        result = matmul_ceiling()
        output = argv[1]
    else:
        protocol = Protocol.from_json(argv[0])
        output = argv[1]
        result = latency_rows(protocol)
    result["peak_memory_mb"] = peak_memory_mb()
    write_json(output, result)


if __name__ == "__main__":
    main(sys.argv[1:])
