"""Loading a finished run: its model, tokenizer, labels and configuration."""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile

import keras

from fnn_keras.config import ConfigError, DataConfig, config_from_dict, load_yaml
from fnn_keras.data.labels import LabelVocabulary
from fnn_keras.data.multilabel import (
    LABEL_THRESHOLDS_FILE,
    load_label_thresholds,
    multi_hot,
    split_label_sets,
)
from fnn_keras.data.pipeline import build_preprocessor
from fnn_keras.data.readers import demo_data_paths, read_examples
from fnn_keras.data.thresholds import load_threshold
from fnn_keras.layout import RunPaths
from fnn_keras.models.classifier import is_multilabel
from fnn_keras.tokenizer import TokenizerError, load_tokenizer, reads_text_pairs

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """Raised when a run cannot be loaded or an export cannot be written."""


@dataclasses.dataclass
class TrainedRun:
    """A trained model with everything needed to serve it.

    Attributes:
        paths: Where the run's files are.
        model: The classifier, loaded from `model.keras`.
        tokenizer: The keras-hub tokenizer used in training.
        preprocessor: A preprocessor at the training sequence length.
        labels: Label names in class-id order.
        sequence_length: Tokens per text used in training.
        dev_path: The run's dev file, if its config names one that exists.
        text_pair: The model reads `(text, text_pair)` sentence pairs.
        data: The `data` section of the run's config (columns, encoding),
            or the defaults when the run has no readable config.
        batch_size: The run's training batch size (32 without a config).
        threshold: The binary decision threshold from `thresholds.json`,
            or `None` to predict the most probable label.
        label_thresholds: A multi-label run's threshold per label, from
            `label_thresholds.json`; `None` for other runs.
    """

    paths: RunPaths
    model: keras.Model
    tokenizer: object
    preprocessor: object
    labels: list[str]
    sequence_length: int
    dev_path: str | None
    text_pair: bool = False
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 32
    threshold: float | None = None
    label_thresholds: list[float] | None = None

    @property
    def multilabel(self) -> bool:
        """Whether the model gives each label its own sigmoid probability."""
        return self.label_thresholds is not None


def _resolve(run: str, export_dir: str) -> RunPaths:
    if run.endswith(".keras"):
        if not os.path.isfile(run):
            raise ExportError(f"Model file not found: {run}")
        run_dir = os.path.dirname(os.path.abspath(run))
        name = os.path.basename(run_dir)
        paths = RunPaths(name, run_dir, "")
        if os.path.abspath(paths.model) != os.path.abspath(run):
            raise ExportError(
                f"{run}: the model file of a run must be named model.keras, "
                "beside labels.json and tokenizer/."
            )
        return paths
    run_dir = run if os.path.isdir(run) else os.path.join(export_dir, run)
    if not os.path.isdir(run_dir):
        raise ExportError(
            f"Run not found: {run!r} is neither a directory nor a run name in "
            f"{export_dir}/. Pass a run name, a run directory or a model.keras path."
        )
    run_dir = os.path.normpath(run_dir)
    paths = RunPaths(os.path.basename(run_dir), run_dir, "")
    if not os.path.isfile(paths.model):
        raise ExportError(
            f"{run_dir} has no model.keras, so it is not a finished run. If it is an "
            "interrupted run, rerun its training command to resume it."
        )
    return paths


def load_trained_run(run: str, export_dir: str = "exported") -> TrainedRun:
    """Load a finished run by name, directory or `model.keras` path.

    Args:
        run: A run name under `export_dir`, a run directory, or the path of
            a run's `model.keras`.
        export_dir: Root of run directories.

    Returns:
        A `TrainedRun`.

    Raises:
        ExportError: The run is missing, incomplete or corrupt.

    Example:

    ```python
    run = load_trained_run("run-20261204-201500")
    run.model.summary()
    ```
    """
    paths = _resolve(run, export_dir)
    for required in (paths.labels, paths.tokenizer):
        if not os.path.exists(required):
            raise ExportError(f"{paths.run_dir} is missing {os.path.basename(required)}.")
    try:
        model = keras.saving.load_model(paths.model, compile=False)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ExportError(
            f"Failed to load {paths.model}; the file is corrupt or not a Keras "
            f"model ({error.__class__.__name__}). Retrain the run or restore the file."
        ) from None
    try:
        tokenizer, sequence_length = load_tokenizer(paths.tokenizer)
        text_pair = reads_text_pairs(paths.tokenizer)
        labels = LabelVocabulary.load(paths.labels).labels
        threshold = load_threshold(paths.run_dir, labels)
        label_thresholds = load_label_thresholds(paths.run_dir, labels)
    except (TokenizerError, OSError, ValueError) as error:
        raise ExportError(f"{paths.run_dir}: {error}") from None
    if label_thresholds is None and is_multilabel(model):
        raise ExportError(
            f"{paths.run_dir} has a multi-label model, but its {LABEL_THRESHOLDS_FILE} is "
            "missing; restore the file, or write one with a threshold per label, such as "
            f'{{"thresholds": {{"{labels[0]}": 0.5, ...}}}}.'
        )

    dev_path = None
    data = DataConfig()
    batch_size = 32
    if os.path.isfile(paths.config):
        try:
            config = config_from_dict(load_yaml(paths.config), paths.config)
            dev_path = config.data.dev or demo_data_paths()[1]
            data = config.data
            batch_size = config.training.batch_size
        except ConfigError as error:
            logger.warning("Ignoring the run's config: %s", error)
    if dev_path is not None and not os.path.isfile(dev_path):
        dev_path = None

    return TrainedRun(
        paths=paths,
        model=model,
        tokenizer=tokenizer,
        preprocessor=build_preprocessor(tokenizer, sequence_length),
        labels=labels,
        sequence_length=sequence_length,
        dev_path=dev_path,
        text_pair=text_pair,
        data=data,
        batch_size=batch_size,
        threshold=threshold,
        label_thresholds=label_thresholds,
    )


def read_run_examples(
    run: TrainedRun,
    path: str,
    text_column: str | None = None,
    label_column: str | None = None,
    text_pair_column: str | None = None,
    encoding: str | None = None,
):
    """Read a labelled file the way the run read its training data.

    Columns and encoding default to the run's; each argument overrides one.

    Args:
        run: The trained run.
        path: The labelled file (TSV, CSV or JSON Lines).
        text_column: Text column, or `None` for the run's.
        label_column: Label column, or `None` for the run's.
        text_pair_column: Second-text column, or `None` for the run's.
        encoding: File encoding, or `None` for the run's.

    Returns:
        `(examples, label_ids)`: the `Examples` read and their class ids,
        or for a multi-label run their `(n, num_labels)` multi-hot rows
        (labels split at the run's `label_delimiter`).

    Raises:
        ExportError: Pairs for a single-text run, or the reverse.
        DataError: The file cannot be read.
        LabelError: A label the run does not know.

    Example:

    ```python
    examples, label_ids = read_run_examples(run, "test.tsv")
    ```
    """
    data = run.data
    text_column = text_column or data.text_column
    label_column = label_column or data.label_column
    text_pair_column = text_pair_column or data.text_pair_column
    columns = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    if len(set(columns)) < len(columns):
        raise ExportError(
            f"The data columns must differ. Received: {', '.join(columns)}; pass other "
            "--text-column, --text-pair-column or --label-column values."
        )
    examples = read_examples(
        path,
        text_column,
        label_column,
        text_pair_column=text_pair_column,
        encoding=encoding or data.encoding,
        on_bad_row=data.on_bad_row,
    )
    if run.text_pair and examples.pairs is None:
        raise ExportError(
            f"{run.paths.run_dir} was trained on text pairs; pass --text-pair-column "
            f"with the second-text column of {path}."
        )
    if not run.text_pair and examples.pairs is not None:
        raise ExportError(
            f"{run.paths.run_dir} was trained on single texts; drop --text-pair-column."
        )
    vocabulary = LabelVocabulary(run.labels)
    known = f"the labels of run {run.paths.run_name}"
    if run.multilabel:
        label_sets = split_label_sets(examples.labels, data.label_delimiter, path, examples.lines)
        vocabulary.check([label for labels in label_sets for label in labels], path, known=known)
        return examples, multi_hot(label_sets, vocabulary)
    vocabulary.check(examples.labels, path, known=known)
    return examples, vocabulary.encode(examples.labels)
