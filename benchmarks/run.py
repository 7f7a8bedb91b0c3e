"""Run the benchmark suite and write `results.json` and `results.md`.

    python -m benchmarks.run [--rows fnn_keras,torch_128] [--no-latency]

Run it from the repository root. Every row runs in its own process, one
after another, on the same machine, sample and settings; the matrix-multiply
ceiling is measured first. See `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

import numpy as np

from benchmarks.common import Protocol, encoder_shape, training_flops, write_json
from benchmarks.training_rows import DEFAULT_ROWS, ROWS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {
    "torch_128": 4.0,  # fnn_keras examples/s over the PyTorch recipe's
    "keras_hub_128": 3.0,  # and over keras-hub at sequence_length=128
}
LATENCY_NAMES = {
    "keras_predict": "Keras `model.predict` (baseline)",
    "keras": "fnn_keras predictor on `model.keras`",
    "saved_model": "SavedModel `serving_default`",
    "tflite_float32": "TFLite float32",
    "tflite_dynamic_int8": "TFLite dynamic-range int8",
    "onnx": "ONNX Runtime",
}
MAX_HEAD_OVERHEAD = 0.15
MAX_LATENCY_FRACTION = 1 / 3


def build_parser() -> argparse.ArgumentParser:
    defaults = Protocol()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Training throughput, inference latency and the matmul ceiling, side by side.",
    )
    parser.add_argument(
        "--data-dir", default=defaults.data_dir, help="SST-2 folder. Default: %(default)s."
    )
    parser.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"Training rows, comma-separated, from: {', '.join(ROWS)}. Default: %(default)s.",
    )
    parser.add_argument("--no-latency", action="store_true", help="Skip the latency rows.")
    parser.add_argument(
        "--sample-size",
        type=int,
        default=defaults.sample_size,
        help="Training sentences drawn from train.tsv. Default: %(default)s.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="Seed of the sample, batch orders and weights. Default: %(default)s.",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=defaults.warmup_steps,
        help="Training steps before timing starts. Default: %(default)s.",
    )
    parser.add_argument(
        "--steps-per-repeat",
        type=int,
        default=defaults.steps_per_repeat,
        help="Timed training steps per repeat. Default: %(default)s.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=defaults.repeats,
        help="Timed repeats; rates are their median. Default: %(default)s.",
    )
    parser.add_argument(
        "--latency-texts",
        type=int,
        default=defaults.latency_texts,
        help="Dev texts timed one at a time. Default: %(default)s.",
    )
    parser.add_argument(
        "--output-dir",
        default=os.path.join("benchmarks", "results"),
        help="Where results.json, results.md and the row logs go. Default: %(default)s.",
    )
    return parser


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _protocol(args) -> Protocol:
    rows = [row for row in args.rows.split(",") if row]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        _fail(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}.")
    for name in ("sample_size", "warmup_steps", "steps_per_repeat", "repeats", "latency_texts"):
        if getattr(args, name) < 1:
            _fail(
                f"--{name.replace('_', '-')} must be at least 1. Received: {getattr(args, name)}."
            )
    for name in ("train.tsv", "dev.tsv"):
        if not os.path.isfile(os.path.join(args.data_dir, name)):
            _fail(
                f"{os.path.join(args.data_dir, name)} not found; pass --data-dir with the "
                "SST-2 folder (train.tsv and dev.tsv)."
            )
    protocol = Protocol(
        data_dir=os.path.abspath(args.data_dir),
        sample_size=args.sample_size,
        seed=args.seed,
        warmup_steps=args.warmup_steps,
        steps_per_repeat=args.steps_per_repeat,
        repeats=args.repeats,
        latency_texts=args.latency_texts,
    )
    batches = -(-protocol.sample_size // protocol.batch_size)
    if protocol.total_steps > batches:
        _fail(
            f"{protocol.total_steps} steps need {protocol.total_steps * protocol.batch_size} "
            f"examples, more than the sample of {protocol.sample_size}; raise --sample-size "
            "or lower the steps."
        )
    return protocol


def _child(module_args: list[str], log_path: str) -> tuple[int, float]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.call(
            [sys.executable, "-m", *module_args], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    return code, time.perf_counter() - start


def _tail(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as file:
        lines = [line.strip() for line in file if line.strip()]
    return lines[-1] if lines else "(no output)"


def training_metrics(result: dict, protocol: Protocol, shape: dict, ceiling: float) -> dict:
    """Turn a row's step times and batch lengths into median rates over the repeats."""
    ends = result["step_ends"]
    real = result["real_lengths"]
    padded = result["padded_lengths"]
    warmup, steps = protocol.warmup_steps, protocol.steps_per_repeat
    repeats = []
    for repeat in range(protocol.repeats):
        first = warmup + repeat * steps
        window = range(first, first + steps)
        seconds = ends[first + steps - 1] - ends[first - 1]
        useful = sum(training_flops(shape, real[i]) for i in window)
        executed = sum(training_flops(shape, [padded[i]] * len(real[i])) for i in window)
        repeats.append(
            {
                "seconds": seconds,
                "examples_per_s": sum(len(real[i]) for i in window) / seconds,
                "real_tokens_per_s": sum(sum(real[i]) for i in window) / seconds,
                "step_ms": 1000 * seconds / steps,
                "useful_gflops": useful / seconds / 1e9,
                "executed_gflops": executed / seconds / 1e9,
                "padded_per_real_token": sum(padded[i] * len(real[i]) for i in window)
                / sum(sum(real[i]) for i in window),
            }
        )
    metrics = {
        key: float(np.median([r[key] for r in repeats])) for key in repeats[0] if key != "seconds"
    }
    metrics["useful_fraction_of_ceiling"] = metrics["useful_gflops"] / ceiling
    metrics["executed_fraction_of_ceiling"] = metrics["executed_gflops"] / ceiling
    metrics["repeats"] = repeats
    return metrics


def acceptance(training: dict, latency: dict | None) -> list[dict]:
    """Check the speed and latency targets against the measured rows. A row that did not run is not checked."""
    checks = []
    ours = training.get("fnn_keras", {}).get("metrics")
    for row, target in TARGETS.items():
        other = training.get(row, {}).get("metrics")
        if ours and other:
            ratio = ours["examples_per_s"] / other["examples_per_s"]
            checks.append(
                {
                    "check": f"fnn_keras examples/s vs {row}",
                    "measured": f"{ratio:.2f}x",
                    "target": f">= {target:g}x",
                    "passed": ratio >= target,
                }
            )
    pooled = training.get("fnn_keras_pooled", {}).get("metrics")
    if ours and pooled:
        overhead = ours["step_ms"] / pooled["step_ms"] - 1
        checks.append(
            {
                "check": "feedback head step time over the pooled head",
                "measured": f"{overhead:+.1%}",
                "target": f"<= {MAX_HEAD_OVERHEAD:.0%}",
                "passed": overhead <= MAX_HEAD_OVERHEAD,
            }
        )
    if latency:
        rows = latency["rows"]
        keras_p50 = rows["keras_predict"]["one_text"]["p50_ms"]
        for name in ("onnx", "tflite_float32", "tflite_dynamic_int8"):
            fraction = rows[name]["one_text"]["p50_ms"] / keras_p50
            checks.append(
                {
                    "check": f"{name} p50 for one text vs Keras model.predict",
                    "measured": f"{fraction:.2f}",
                    "target": f"<= {MAX_LATENCY_FRACTION:.2f}",
                    "passed": fraction <= MAX_LATENCY_FRACTION,
                }
            )
    return checks


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "keras-hub", "onnxruntime", "ai-edge-litert", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def format_markdown(results: dict) -> str:
    """Render the results as the Markdown tables the README quotes."""
    protocol = results["protocol"]
    ceiling = results["ceiling"]
    lines = [
        f"# Benchmark results, {results['date']}",
        "",
        f"Machine: {results['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + ".",
        "",
        f"Sample: {protocol['sample_size']} sentences of SST-2 train.tsv (seed "
        f"{protocol['seed']}), global batch {protocol['batch_size']}, "
        f"{protocol['warmup_steps']} warm-up steps, then {protocol['repeats']} repeats of "
        f"{protocol['steps_per_repeat']} timed steps; each rate is the median over the repeats.",
        "",
        "Matrix-multiply ceiling ("
        + ceiling["matrix"]
        + "): "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in ceiling["gflops"].items())
        + f"; the fractions below divide by {ceiling['ceiling_gflops']:.1f}.",
        "",
        "## Training throughput",
        "",
        "| row | examples/s | real tokens/s | step (ms) | padded/real tokens "
        "| useful GFLOP/s (of ceiling) | executed GFLOP/s (of ceiling) | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["training"].items():
        if "error" in row:
            lines.append(f"| {ROWS[name]} | failed: {row['error']} | | | | | | |")
            continue
        m = row["metrics"]
        lines.append(
            f"| {ROWS[name]} | {m['examples_per_s']:.1f} | {m['real_tokens_per_s']:.0f} "
            f"| {m['step_ms']:.0f} | {m['padded_per_real_token']:.2f} "
            f"| {m['useful_gflops']:.1f} ({m['useful_fraction_of_ceiling']:.1%}) "
            f"| {m['executed_gflops']:.1f} ({m['executed_fraction_of_ceiling']:.1%}) "
            f"| {row['peak_memory_mb']:.0f} |"
        )
    latency = results.get("latency")
    if latency and "error" not in latency:
        lines += [
            "",
            "## Inference latency (ms)",
            "",
            f"Text in, probabilities out: the Keras baseline tokenizes and calls "
            f"`model.predict`; the other rows go through the predictor of "
            f"`python -m fnn_keras.predict` for that artifact. The model call column feeds "
            f"token ids. TFLite runs one text per call, at the shortest of its fixed lengths "
            f"(16, 32, 64 up to {latency['export_sequence_length']}) that holds the text. "
            f"{protocol['latency_texts']} single texts and {protocol['latency_batches']} "
            f"batches of {protocol['batch_size']} from SST-2 dev.tsv, after 3 warm-up calls.",
            "",
            "| artifact | 1 text p50 | 1 text p95 | 32 texts p50 | 32 texts p95 "
            "| model call, 1 text p50 |",
            "|---|---|---|---|---|---|",
        ]
        for key, row in latency["rows"].items():
            name = LATENCY_NAMES.get(key, key)
            model = row.get("one_text_model")
            lines.append(
                f"| {name} | {row['one_text']['p50_ms']:.1f} | {row['one_text']['p95_ms']:.1f} "
                f"| {row['batch']['p50_ms']:.1f} | {row['batch']['p95_ms']:.1f} "
                f"| {model['p50_ms']:.1f} |"
                if model
                else f"| {name} | {row['one_text']['p50_ms']:.1f} "
                f"| {row['one_text']['p95_ms']:.1f} | {row['batch']['p50_ms']:.1f} "
                f"| {row['batch']['p95_ms']:.1f} | |"
            )
    elif latency:
        lines += ["", f"Latency failed: {latency['error']}"]
    if results["acceptance"]:
        lines += [
            "",
            "## Targets",
            "",
            "| check | measured | target | result |",
            "|---|---|---|---|",
        ]
        for check in results["acceptance"]:
            verdict = "pass" if check["passed"] else "FAIL"
            lines.append(
                f"| {check['check']} | {check['measured']} | {check['target']} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    protocol = _protocol(args)
    rows = [row for row in args.rows.split(",") if row]
    logs = os.path.join(args.output_dir, "logs")
    try:
        os.makedirs(logs, exist_ok=True)
    except OSError as error:
        _fail(f"cannot create --output-dir {args.output_dir}: {error.strerror}.")

    # TensorFlow's C++ start-up notes would bury the progress lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fnn_keras.backbones import BackboneError, minilm_path

    try:
        shape = encoder_shape(minilm_path())
    except BackboneError as error:
        _fail(str(error))

    print("matmul ceiling ...", flush=True)
    ceiling_path = os.path.join(logs, "ceiling.json")
    code, _ = _child(["benchmarks.latency", "--ceiling", ceiling_path], ceiling_path + ".log")
    if code:
        _fail(f"the ceiling measure failed: {_tail(ceiling_path + '.log')}")
    with open(ceiling_path, encoding="utf-8") as file:
        ceiling = json.load(file)
    print(f"  {ceiling['ceiling_gflops']:.1f} GFLOP/s", flush=True)

    training = {}
    for row in rows:
        print(f"{row} ...", flush=True)
        output = os.path.join(logs, f"{row}.json")
        code, seconds = _child(
            ["benchmarks.training_rows", row, protocol.to_json(), output], output + ".log"
        )
        if code:
            training[row] = {"error": _tail(output + ".log")}
            print(f"  failed after {seconds:.0f} s: {training[row]['error']}", flush=True)
            continue
        with open(output, encoding="utf-8") as file:
            result = json.load(file)
        result["metrics"] = training_metrics(result, protocol, shape, ceiling["ceiling_gflops"])
        result["wall_seconds"] = seconds
        training[row] = result
        m = result["metrics"]
        print(
            f"  {m['examples_per_s']:.1f} examples/s, {m['step_ms']:.0f} ms/step ({seconds:.0f} s)",
            flush=True,
        )

    latency = None
    if not args.no_latency:
        print("latency ...", flush=True)
        output = os.path.join(logs, "latency.json")
        code, seconds = _child(["benchmarks.latency", protocol.to_json(), output], output + ".log")
        if code:
            latency = {"error": _tail(output + ".log")}
            print(f"  failed: {latency['error']}", flush=True)
        else:
            with open(output, encoding="utf-8") as file:
                latency = json.load(file)
            print(f"  done ({seconds:.0f} s)", flush=True)

    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "versions": _versions(),
        "protocol": json.loads(protocol.to_json()),
        "encoder": shape,
        "ceiling": ceiling,
        "training": training,
        "latency": latency,
    }
    results["acceptance"] = acceptance(
        {k: v for k, v in training.items() if "error" not in v},
        latency if latency and "error" not in latency else None,
    )
    write_json(os.path.join(args.output_dir, "results.json"), results)
    markdown = format_markdown(results)
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as file:
        file.write(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
