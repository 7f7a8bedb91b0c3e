"""Evaluate a trained run on a labelled file: `python -m fnn_keras.evaluate RUN --data FILE`.

Writes `metrics.json`, `report.md` and the confusion-matrix images into
`<run directory>/evaluations/<file name>/`, or into `--output`. With
`--ensemble RUN RUN ...` it evaluates the mean of the runs' probabilities,
by default into `<export dir>/ensembles/<run>+<run>/evaluations/<file name>/`.
"""

from __future__ import annotations

import argparse
import logging
import os

from fnn_keras.cli import (
    ArgumentParser,
    add_data_file_arguments,
    fail,
    os_error_message,
    setup_logging,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fnn_keras.evaluate",
        description="Evaluate a trained run on a labelled file and write metrics.json, a "
        "Markdown report and confusion-matrix images.",
    )
    parser.add_argument(
        "run",
        nargs="?",
        help="Run name under --export-dir, a run directory, or a model.keras path. Leave it "
        "out with --ensemble.",
    )
    parser.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN",
        help="Evaluate the mean of these runs' probabilities (the most probable label wins).",
    )
    parser.add_argument(
        "--data", required=True, help="Labelled TSV, CSV or JSON Lines file to evaluate on."
    )
    parser.add_argument(
        "--output",
        help="Directory for the report. Default: <run directory>/evaluations/<file name>.",
    )
    parser.add_argument(
        "--export-dir", default="exported", help="Root of run directories. Default: exported."
    )
    add_data_file_arguments(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        help="Texts per batch. Default: the run's training batch size, which makes the "
        "run's own dev file give exactly the metrics of its training report.",
    )
    parser.add_argument("--quiet", action="store_true", help="Warnings only.")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.batch_size is not None and args.batch_size < 1:
        fail(f"--batch-size must be a positive integer. Received: {args.batch_size}.")
    if (args.run is None) == (args.ensemble is None):
        fail("pass one RUN, or --ensemble RUN RUN ..., not both.")

    from fnn_keras.data.labels import LabelError
    from fnn_keras.data.readers import DataError
    from fnn_keras.evaluation.metrics import evaluation_metrics
    from fnn_keras.evaluation.multilabel import multilabel_metrics, write_multilabel_report
    from fnn_keras.evaluation.report import write_report
    from fnn_keras.export.parity import keras_probabilities
    from fnn_keras.export.predictors import (
        PredictorError,
        average_probabilities,
        check_ensemble_members,
    )
    from fnn_keras.export.trained_run import ExportError, load_trained_run, read_run_examples

    logger = logging.getLogger("fnn_keras.evaluate")
    try:
        names = args.ensemble or [args.run]
        runs = [load_trained_run(name, args.export_dir) for name in names]
        tagging = [
            name for name, run in zip(names, runs, strict=True) if run.data.task == "tagging"
        ]
        if tagging:
            raise ExportError(
                f"{tagging[0]} is a token tagging run, which evaluate does not score; its dev "
                "entity scores are in its metrics.json."
            )
        if args.ensemble:
            check_ensemble_members(runs, names)
        run = runs[0]
        examples, label_ids = read_run_examples(
            run,
            args.data,
            text_column=args.text_column,
            label_column=args.label_column,
            text_pair_column=args.text_pair_column,
            encoding=args.encoding,
        )
        if not len(label_ids):
            raise ExportError(f"{args.data}: no labelled examples to evaluate on.")
        # The ensemble predicts the most probable label of the mean.
        threshold = None if args.ensemble else run.threshold
        file_name = os.path.basename(os.path.normpath(args.data))
        if args.ensemble:
            member_names = "+".join(member.paths.run_name for member in runs)
            title = f"Evaluation of the ensemble {member_names} on {args.data}"
            default_output = os.path.join(
                args.export_dir, "ensembles", member_names, "evaluations", file_name
            )
        else:
            title = f"Evaluation of run {run.paths.run_name} on {args.data}"
            default_output = os.path.join(run.paths.run_dir, "evaluations", file_name)
        output = args.output or default_output
        if os.path.exists(output) and not os.path.isdir(output):
            raise ExportError(f"--output {output} is a file; pass a directory for the report.")
        if os.path.exists(os.path.join(output, "metrics.json")):
            logger.warning(
                "Replacing the earlier report in %s; pass --output to keep both.", output
            )
        os.makedirs(output, exist_ok=True)
        probabilities = average_probabilities(
            [
                keras_probabilities(
                    member.model,
                    member.preprocessor,
                    examples.inputs,
                    args.batch_size or member.batch_size,
                )
                for member in runs
            ]
        )
        if run.multilabel:
            # An ensemble decides every label at 0.5, as `predict --ensemble` does.
            thresholds = [0.5] * len(run.labels) if args.ensemble else run.label_thresholds
            metrics = multilabel_metrics(
                probabilities, label_ids, run.labels, thresholds, examples.path
            )
        else:
            metrics = evaluation_metrics(
                probabilities, label_ids, run.labels, examples.path, threshold
            )
        if args.ensemble:
            metrics["ensemble"] = [member.paths.run_name for member in runs]
        write = write_multilabel_report if run.multilabel else write_report
        metrics_path, report_path = write(metrics, output, title=title)
    except (ExportError, DataError, LabelError, PredictorError) as error:
        fail(str(error))
    except OSError as error:
        fail(os_error_message(error))

    skipped = sum(examples.skipped.values())
    note = f", {skipped} row(s) skipped" if skipped else ""
    evaluated = f"Ensemble {'+'.join(names)}" if args.ensemble else f"Run {run.paths.run_name}"
    scores = (
        f"micro-F1 {metrics['micro_f1']:.4f}"
        if "micro_f1" in metrics
        else f"accuracy {metrics['accuracy']:.4f}"
    )
    print(
        f"{evaluated} on {args.data}: {scores}, macro-F1 {metrics['macro_f1']:.4f} "
        f"({metrics['examples']} examples{note})"
    )
    print(f"Metrics: {metrics_path}")
    print(f"Report:  {report_path}")


if __name__ == "__main__":
    main()
