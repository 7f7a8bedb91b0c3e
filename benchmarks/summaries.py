"""The time the default TensorBoard summaries add to a training epoch.

Trains on SST-2 (the Reproduce data: the first 4,000 training rows, seed 0, without FGM)
twice in fresh processes, one after the other: with the default summaries and with
`--no-summaries`. It compares the wall time of each epoch, taken as
the time between the `epoch_loss` events of consecutive epochs. That time covers the training
steps, the dev pass and every summary written at the epoch end. The first epoch is left out of
the mean because it also traces the model.

    python -m benchmarks.summaries            # about 10 minutes on 2 CPU cores

It writes `benchmarks/results/summaries.json` and `.md`. Run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from tensorboard.backend.event_processing import event_accumulator

SETTINGS = {"default summaries": [], "--no-summaries": ["--no-summaries"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.summaries",
        description="Measure the epoch time the default TensorBoard summaries add.",
    )
    parser.add_argument(
        "--data-dir",
        default=os.path.join("..", "shared", "data", "sst2"),
        help="Folder with SST-2 train.tsv and dev.tsv. Default: ../shared/data/sst2.",
    )
    parser.add_argument(
        "--max-train-examples", type=int, default=4000, help="Training rows. Default: 4000."
    )
    parser.add_argument("--epochs", type=int, default=5, help="Epochs per run. Default: 5.")
    parser.add_argument(
        "--output-dir",
        default=os.path.join("benchmarks", "results"),
        help="Where the results go. Default: benchmarks/results.",
    )
    return parser


def epoch_times(train_log_dir: str) -> list[float]:
    """Return the wall seconds between consecutive epoch ends of one run."""
    accumulator = event_accumulator.EventAccumulator(
        train_log_dir, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    ends = [event.wall_time for event in accumulator.Tensors("epoch_loss")]
    return [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]


def run_training(name: str, flags: list[str], args, work_dir: str) -> dict:
    command = [
        sys.executable, "-m", "fnn_keras.train",
        "--train", os.path.join(args.data_dir, "train.tsv"),
        "--dev", os.path.join(args.data_dir, "dev.tsv"),
        "--max-train-examples", str(args.max_train_examples),
        "--epochs", str(args.epochs), "--seed", "0", "--no-export", "--quiet",
        # Every epoch runs, so both runs time the same number of epochs.
        "--patience", str(args.epochs),
        "--run-name", name.replace(" ", "-").strip("-"),
        "--log-dir", os.path.join(work_dir, "logs"),
        "--export-dir", os.path.join(work_dir, "exported"),
        *flags,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{result.stderr[-3000:]}")
    run_name = command[command.index("--run-name") + 1]
    times = epoch_times(os.path.join(work_dir, "logs", run_name, "train"))
    return {
        "flags": flags,
        "command_seconds": round(seconds, 1),
        "epoch_seconds_after_first": [round(t, 2) for t in times],
        "mean_epoch_seconds": round(sum(times) / len(times), 2),
    }


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    work_dir = os.path.join(args.output_dir, "logs", "summaries")
    # The runs of an earlier invocation would make the trainer reject the run names.
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)

    runs = {name: run_training(name, flags, args, work_dir) for name, flags in SETTINGS.items()}
    on, off = runs["default summaries"], runs["--no-summaries"]
    overhead = on["mean_epoch_seconds"] / off["mean_epoch_seconds"] - 1

    results = {
        "data": args.data_dir,
        "max_train_examples": args.max_train_examples,
        "epochs": args.epochs,
        "runs": runs,
        "overhead_fraction": round(overhead, 4),
    }
    with open(os.path.join(args.output_dir, "summaries.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)

    lines = [
        f"SST-2, first {args.max_train_examples} training rows, {args.epochs} epochs, seed 0; "
        "epoch wall time from epoch 2 on (training steps, dev pass and summaries).",
        "",
        "| run | mean epoch (s) | epochs 2.. (s) | whole command (s) |",
        "|---|---|---|---|",
    ]
    for name, run in runs.items():
        epochs = ", ".join(f"{t:.1f}" for t in run["epoch_seconds_after_first"])
        lines.append(
            f"| {name} | {run['mean_epoch_seconds']:.1f} | {epochs} | {run['command_seconds']:.0f} |"
        )
    lines += ["", f"The default summaries add {overhead:.1%} to an epoch."]
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.output_dir, "summaries.md"), "w", encoding="utf-8") as file:
        file.write(table)
    print(table)


if __name__ == "__main__":
    main()
