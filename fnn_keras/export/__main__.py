"""Export a trained run: `python -m fnn_keras.export RUN`.

Writes a SavedModel version for TF Serving, TFLite variants and ONNX, checks
each against the Keras model on dev texts, and writes `export_report.json`.
"""

from __future__ import annotations

import argparse

from fnn_keras.cli import (
    ArgumentParser,
    add_data_file_arguments,
    fail,
    os_error_message,
    setup_logging,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fnn_keras.export",
        description="Export a trained run to SavedModel, TFLite and ONNX and check each "
        "against the Keras model.",
    )
    parser.add_argument(
        "run", help="Run name under --export-dir, a run directory, or a model.keras path."
    )
    parser.add_argument(
        "--export-dir", default="exported", help="Root of run directories. Default: exported."
    )
    parser.add_argument(
        "--formats",
        default="saved_model,tflite,onnx",
        help="Comma-separated formats. Default: saved_model,tflite,onnx.",
    )
    parser.add_argument(
        "--tflite-variants",
        default="float32,float16,dynamic_int8,full_int8",
        help="Comma-separated TFLite variants. Default: all four.",
    )
    parser.add_argument(
        "--data",
        help="Labelled file for the parity check. Default: the run's dev file.",
    )
    add_data_file_arguments(parser)
    parser.add_argument(
        "--parity-examples",
        type=int,
        default=0,
        help="Use only the first N texts for the parity check. Default: all.",
    )
    parser.add_argument("--quiet", action="store_true", help="Warnings only.")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)

    from fnn_keras.data.labels import LabelError
    from fnn_keras.data.readers import DataError
    from fnn_keras.export.exporter import export_run
    from fnn_keras.export.trained_run import ExportError, load_trained_run, read_run_examples

    if args.parity_examples < 0:
        fail(f"--parity-examples must be 0 (all) or positive. Received: {args.parity_examples}.")
    formats = tuple(x for x in args.formats.split(",") if x)
    variants = tuple(x for x in args.tflite_variants.split(",") if x)
    from fnn_keras.export.exporter import DEFAULT_TFLITE_VARIANTS
    from fnn_keras.export.tagging_predict import tagging_run_dir

    if tagging_run_dir(args.run, args.export_dir) is not None:
        if variants != DEFAULT_TFLITE_VARIANTS and set(variants) != {"float32"}:
            fail(
                f"--tflite-variants {args.tflite_variants}: tagging runs export the float32 "
                "TFLite model only; drop the flag or pass --tflite-variants float32."
            )
        _export_tagging(args, formats)
        return
    try:
        run = load_trained_run(args.run, args.export_dir)
        data_path = args.data or run.dev_path
        if data_path is None:
            missing = (
                f"The run's dev file {run.data.dev!r} does not exist here"
                if run.data.dev
                else "The run names no dev file"
            )
            raise ExportError(f"{missing}; pass --data FILE.")
        examples, label_ids = read_run_examples(
            run,
            data_path,
            text_column=args.text_column,
            label_column=args.label_column,
            text_pair_column=args.text_pair_column,
            encoding=args.encoding,
        )
        if args.parity_examples > 0:
            examples = examples.head(args.parity_examples)
            label_ids = label_ids[: args.parity_examples]
        report = export_run(
            run, examples.inputs, label_ids, formats=formats, tflite_variants=variants
        )
    except (ExportError, DataError, LabelError) as error:
        fail(str(error))
    except OSError as error:
        fail(os_error_message(error))
    _print_report(report, run.paths.export_report)


def _print_report(report: dict, path: str) -> None:
    """Print one line per artifact and the report's path; exit 2 when an artifact failed."""
    from fnn_keras.export.exporter import artifact_lines, failure_message

    for line in artifact_lines(report):
        print(line)
    print(f"Report: {path}")
    failure = failure_message(report)
    if failure:
        fail(failure)


def _export_tagging(args, formats: tuple[str, ...]) -> None:
    """Export a tagging run; TFLite is float32 only, so --tflite-variants does not apply."""
    from fnn_keras.data.readers import DataError
    from fnn_keras.export.tagging import export_tagging_run, tagging_parity_texts
    from fnn_keras.export.trained_run import ExportError, load_trained_run

    try:
        run = load_trained_run(args.run, args.export_dir)
        texts = tagging_parity_texts(run, args.data, args.parity_examples)
        report = export_tagging_run(run.paths.run_dir, texts, formats)
    except (ExportError, DataError) as error:
        fail(str(error))
    except OSError as error:
        fail(os_error_message(error))
    _print_report(report, run.paths.export_report)


if __name__ == "__main__":
    main()
