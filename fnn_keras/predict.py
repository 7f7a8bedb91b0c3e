"""Classify texts, or find their entities, with a trained run or any of its exports.

    python -m fnn_keras.predict ARTIFACT "first text" "second text"
    python -m fnn_keras.predict ARTIFACT --file texts.txt
    cat texts.txt | python -m fnn_keras.predict ARTIFACT
    python -m fnn_keras.predict --ensemble RUN RUN --file texts.txt

ARTIFACT is a run name or directory, a `model.keras`, a SavedModel version
directory, a `.tflite` file or a `.onnx` file. `--ensemble` averages the
probabilities of several of them instead, and every positional argument is
then a text. Output is JSON Lines. For a sentence-pair model, each text is
`text<TAB>text_pair`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fnn_keras.cli import ArgumentParser, fail, os_error_message

PAIR_KEYS = ("text", "text_pair")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fnn_keras.predict",
        description="Classify texts (or, with a token tagging run, find their entities); "
        "prints one JSON object per text.",
    )
    parser.add_argument(
        "artifact",
        nargs="?",
        help="Run name or directory, model.keras, SavedModel version directory, "
        ".tflite or .onnx file. Leave it out with --ensemble.",
    )
    parser.add_argument(
        "texts",
        nargs="*",
        help="Texts to classify (text<TAB>text_pair for a sentence-pair model). "
        "Default: --file or stdin.",
    )
    parser.add_argument("--file", help="UTF-8 file with one text (or tab-separated pair) per line.")
    parser.add_argument("--export-dir", default="exported", help="Root of run directories.")
    parser.add_argument("--batch-size", type=int, default=32, help="Texts per batch. Default: 32.")
    parser.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN",
        help="Average the probabilities of these runs (or artifacts) and predict the most "
        "probable label. Give texts before this flag or with --file.",
    )
    return parser


def _read_texts(args) -> list[str]:
    if args.texts and args.file:
        fail("pass texts as arguments or with --file, not both.")
    if args.texts:
        return list(args.texts)
    source = args.file or "standard input"
    try:
        if args.file:
            with open(args.file, "rb") as file:
                data = file.read()
        else:
            data = sys.stdin.buffer.read()
        text = data.decode("utf-8")
    except FileNotFoundError:
        fail(f"text file not found: {args.file}")
    except OSError as error:
        fail(os_error_message(error))
    except UnicodeDecodeError as error:
        fail(
            f"{source}: invalid UTF-8 byte {error.object[error.start]:#04x} at byte "
            f"{error.start}; convert it to UTF-8."
        )
    # A byte-order mark is an encoding marker, not part of the first text.
    return _split_lines(text.removeprefix("\ufeff"))


def _split_lines(text: str) -> list[str]:
    # One text per "\n"-ended line (a "\r\n" ending counts as one).
    # `str.splitlines` would also split at form feeds, U+2028 and other
    # separators inside a line, so outputs would stop matching input lines.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _split_pairs(texts: list[str], source: str) -> list[tuple[str, str]]:
    pairs = []
    for number, text in enumerate(texts, start=1):
        first, tab, second = text.partition("\t")
        if not tab:
            fail(
                f"{source}, text {number}: this model reads sentence pairs; write each "
                "as text<TAB>text_pair."
            )
        pairs.append((first, second))
    return pairs


def _load_member(name: str, export_dir: str):
    from fnn_keras.export.predictors import PredictorError, load_predictor

    try:
        return load_predictor(name, export_dir)
    except PredictorError as error:
        raise PredictorError(
            f"{error} Every argument after --ensemble names a run; put the texts before "
            "--ensemble or pass --file."
        ) from None


def _print_entities(run_dir: str, texts: list[str], batch_size: int) -> None:
    """Print `{"text", "entities"}` JSON lines for a tagging run's Keras model."""
    from fnn_keras.export.tagging_predict import predict_entities
    from fnn_keras.export.trained_run import ExportError, load_trained_run

    try:
        run = load_trained_run(run_dir)
    except ExportError as error:
        fail(str(error))
    for record in predict_entities(run, texts, batch_size):
        print(json.dumps(record, ensure_ascii=False))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.batch_size < 1:
        fail(f"--batch-size must be a positive integer. Received: {args.batch_size}.")
    if args.ensemble:
        # No artifact: the first positional argument is a text.
        args.texts = ([args.artifact] if args.artifact is not None else []) + args.texts
        args.artifact = None
    elif args.artifact is None:
        fail("pass the ARTIFACT to predict with, or --ensemble RUN RUN ...")
    texts = _read_texts(args)
    if not args.ensemble:
        from fnn_keras.export.tagging_predict import tagging_run_dir

        run_dir = tagging_run_dir(args.artifact, args.export_dir)
        if run_dir is not None:
            _print_entities(run_dir, texts, args.batch_size)
            return

    from fnn_keras.data.summary import token_lengths
    from fnn_keras.export.predictors import (
        EnsemblePredictor,
        PredictorError,
        count_truncated,
        load_predictor,
    )

    if not texts:
        logging.getLogger("fnn_keras.predict").warning("No texts were given; nothing to classify.")
    try:
        if args.ensemble:
            members = [_load_member(name, args.export_dir) for name in args.ensemble]
            predictor = EnsemblePredictor(members, args.ensemble)
        else:
            predictor = load_predictor(args.artifact, args.export_dir)
        if predictor.text_pair:
            source = "arguments" if args.texts else args.file or "standard input"
            texts = _split_pairs(texts, source)
        # One tokenization serves both the length-sorted batching and the
        # truncation count.
        lengths = token_lengths(predictor.tokenizer, texts) if texts else None
        probabilities = predictor.predict(texts, args.batch_size, lengths)
        truncated = count_truncated(predictor, texts, lengths)
    except PredictorError as error:
        fail(str(error))
    except OSError as error:
        fail(os_error_message(error))

    if truncated:
        logging.getLogger("fnn_keras.predict").warning(
            "%d of %d texts are longer than %d tokens; each was classified from its "
            "first %d tokens.",
            truncated,
            len(texts),
            predictor.sequence_length,
            predictor.sequence_length,
        )
    labels = predictor.labels
    multilabel = predictor.label_thresholds is not None
    if not texts:
        predicted = []
    elif multilabel:
        predicted = predictor.label_sets(probabilities)
    else:
        predicted = predictor.label_ids(probabilities)
    for text, row, decision in zip(texts, probabilities, predicted, strict=True):
        record = (
            {"text": text} if isinstance(text, str) else dict(zip(PAIR_KEYS, text, strict=True))
        )
        if multilabel:
            record["labels"] = decision
        else:
            record |= {"label": labels[int(decision)], "label_id": int(decision)}
        record["probabilities"] = {
            label: round(float(p), 6) for label, p in zip(labels, row, strict=True)
        }
        print(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
