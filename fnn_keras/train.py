"""Fine-tune a BERT classifier with a feedback RNN head.

Run `python -m fnn_keras.train` to train on the demo data with the defaults,
or `python -m fnn_keras.train --help` for every option.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

from fnn_keras.cli import ArgumentParser, fail, os_error_message, setup_logging

# Exit code of a run stopped by a NaN or infinite loss (2 is bad input).
EXIT_NON_FINITE_LOSS = 3

# Flag name to the config field it sets.
FLAG_FIELDS = {
    "task": "data.task",
    "train": "data.train",
    "dev": "data.dev",
    "text_column": "data.text_column",
    "label_column": "data.label_column",
    "label_delimiter": "data.label_delimiter",
    "text_pair_column": "data.text_pair_column",
    "encoding": "data.encoding",
    "on_bad_row": "data.on_bad_row",
    "labels": "data.labels",
    "max_train_examples": "data.max_train_examples",
    "sequence_length": "data.sequence_length",
    "bucket_by_length": "data.bucket_by_length",
    "backbone": "model.backbone",
    "feedback_units": "model.feedback_units",
    "feedback_steps": "model.feedback_steps",
    "bidirectional": "model.bidirectional",
    "dropout": "model.dropout",
    "pooling": "model.pooling",
    "feedback_dropout": "model.feedback_dropout",
    "backbone_dropout": "model.backbone_dropout",
    "fine_tune": "model.fine_tune",
    "lora_rank": "model.lora_rank",
    "vocabulary": "model.vocabulary",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "learning_rate": "training.learning_rate",
    "warmup_ratio": "training.warmup_ratio",
    "weight_decay": "training.weight_decay",
    "class_weight": "training.class_weight",
    "head_learning_rate_multiplier": "training.head_learning_rate_multiplier",
    "layer_decay": "training.layer_decay",
    "patience": "training.early_stopping_patience",
    "log_every_steps": "training.log_every_steps",
    "seed": "training.seed",
    "strategy": "training.strategy",
    "cpu_devices": "training.cpu_devices",
    "backup_every_steps": "training.backup_every_steps",
    "deterministic": "training.deterministic",
    "mixed_precision": "training.mixed_precision",
    "jit_compile": "training.jit_compile",
    "tune_thresholds": "training.tune_thresholds",
    "loss": "training.loss",
    "focal_gamma": "training.focal_gamma",
    "label_smoothing": "training.label_smoothing",
    "clip_norm": "training.clip_norm",
    "adversarial": "training.adversarial",
    "adversarial_epsilon": "training.adversarial_epsilon",
    "run_name": "output.run_name",
    "log_dir": "output.log_dir",
    "export_dir": "output.export_dir",
    "export": "output.export",
    "summaries": "output.summaries",
    "histogram_every_epochs": "output.histogram_every_epochs",
    "most_wrong_examples": "output.most_wrong_examples",
    "profile_batches": "output.profile_batches",
}


def metrics_line(metrics: dict) -> str:
    """Return the one-line dev result of a run, for its task."""
    if "entity_f1" in metrics:
        return (
            f"dev entity F1 {metrics['entity_f1']:.4f}, precision "
            f"{metrics['entity_precision']:.4f}, recall {metrics['entity_recall']:.4f} "
            f"({metrics['examples']} sentences)"
        )
    if "micro_f1" in metrics:
        return (
            f"dev micro-F1 {metrics['micro_f1']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
            f"({metrics['examples']} examples)"
        )
    return (
        f"dev accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
        f"({metrics['examples']} examples)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fnn_keras.train",
        description=(
            "Fine-tune a BERT backbone with a feedback RNN head, evaluate it on "
            "the dev split and export a SavedModel. Flags override --config."
        ),
    )
    parser.add_argument("--config", help="YAML file with data/model/training/output sections.")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--task",
        choices=["classification", "multilabel", "tagging"],
        help="classification: one label per text (default); multilabel: a set of labels "
        "per text; tagging: one tag per token, from CoNLL files (token<TAB>tag).",
    )
    data.add_argument(
        "--train",
        help="Training file (.tsv, .csv or .jsonl; a CoNLL file for --task tagging). "
        "Default: the demo data.",
    )
    data.add_argument("--dev", help="Dev file in the same format; required with --train.")
    data.add_argument("--text-column", help="Column or JSON key of the text. Default: text.")
    data.add_argument("--label-column", help="Column or JSON key of the label. Default: label.")
    data.add_argument(
        "--label-delimiter",
        help="Separator of the labels in one field, for --task multilabel. Default: ','.",
    )
    data.add_argument(
        "--text-pair-column",
        help="Column or JSON key of the second text, for sentence-pair tasks. Default: none.",
    )
    data.add_argument(
        "--encoding",
        help="Encoding of the data files, for example gb18030 or latin-1. Default: utf-8.",
    )
    data.add_argument(
        "--on-bad-row",
        choices=["skip", "error"],
        help="Rows with an empty text, a missing label or the wrong number of fields: skip "
        "and count them (default), or stop at the first one.",
    )
    data.add_argument(
        "--labels",
        help="Comma-separated class labels in class-id order. Default: the training labels, "
        "sorted. A listed label without training rows is an error.",
    )
    data.add_argument("--max-train-examples", type=int, help="Use only the first N training rows.")
    data.add_argument("--sequence-length", type=int, help="Maximum tokens per text. Default: 128.")
    data.add_argument(
        "--bucket-by-length",
        action=argparse.BooleanOptionalAction,
        help="Batch training texts of similar length together (less padding). Default: on.",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--backbone",
        help="minilm (default, pretrained), tiny (random, for tests), or the path "
        "of a Hugging Face BERT directory or keras-hub preset directory.",
    )
    model.add_argument(
        "--feedback-units", type=int, help="Feedback state width per direction. Default: 128."
    )
    model.add_argument(
        "--feedback-steps", type=int, help="Feedback iterations per token. Default: 2."
    )
    model.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        help="Run the feedback layer in both directions. Default: on.",
    )
    model.add_argument(
        "--pooling",
        choices=["last", "mean"],
        help="Head input: the feedback output at the last real token, or its mean over the "
        "real tokens. Default: mean.",
    )
    model.add_argument("--dropout", type=float, help="Dropout before the dense head. Default: 0.1.")
    model.add_argument(
        "--feedback-dropout",
        type=float,
        help="Input dropout of the feedback layer. Default: 0.1.",
    )
    model.add_argument(
        "--backbone-dropout",
        type=float,
        help="Dropout inside the backbone. Default: the backbone's own (0.1 for BERT).",
    )
    model.add_argument(
        "--fine-tune",
        choices=["full", "frozen", "lora"],
        help="full: train every weight; frozen: only the feedback layer and head; lora: "
        "low-rank updates of the backbone's attention, merged into the saved model. "
        "Default: full.",
    )
    model.add_argument("--lora-rank", type=int, help="Rank of the LoRA updates. Default: 8.")
    model.add_argument(
        "--vocabulary",
        choices=["train"],
        help="train: give --backbone tiny a vocabulary of every token and character of the "
        "training file (--task tagging only). Default: the backbone's own.",
    )
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, help="Maximum epochs. Default: 5.")
    training.add_argument("--batch-size", type=int, help="Global batch size. Default: 32.")
    training.add_argument(
        "--learning-rate", type=float, help="Peak AdamW learning rate. Default: 5e-5."
    )
    training.add_argument(
        "--warmup-ratio", type=float, help="Fraction of steps for warmup. Default: 0.1."
    )
    training.add_argument("--weight-decay", type=float, help="AdamW weight decay. Default: 0.01.")
    training.add_argument(
        "--class-weight",
        help="none (default), balanced (inverse class frequency), or label=weight pairs such "
        "as neg=1,pos=3.",
    )
    training.add_argument(
        "--head-learning-rate-multiplier",
        type=float,
        help="Learning-rate factor for the feedback layer and dense head. Default: 10.",
    )
    training.add_argument(
        "--layer-decay",
        type=float,
        help="Layer-wise learning-rate decay of the backbone, in (0, 1]. Default: 1 (off).",
    )
    training.add_argument(
        "--patience", type=int, help="Early-stopping patience in epochs. Default: 2."
    )
    training.add_argument(
        "--log-every-steps",
        type=int,
        help="Per-step TensorBoard scalars every N steps. Default: 20.",
    )
    training.add_argument("--seed", type=int, help="Random seed. Default: 0.")
    training.add_argument(
        "--loss",
        choices=["cross_entropy", "focal"],
        help="Training loss; focal down-weights easy examples. Default: cross_entropy.",
    )
    training.add_argument(
        "--focal-gamma", type=float, help="Focusing parameter of --loss focal. Default: 2."
    )
    training.add_argument(
        "--label-smoothing",
        type=float,
        help="Share of each training target spread over all labels, in [0, 1). Default: 0.",
    )
    training.add_argument(
        "--clip-norm",
        type=float,
        help="Clip the gradient to this global norm before each update. Default: off.",
    )
    training.add_argument(
        "--adversarial",
        choices=["none", "fgm"],
        help="fgm: add the loss under a fast-gradient perturbation of the word embeddings "
        "(two forward and backward passes per step). Default: none.",
    )
    training.add_argument(
        "--adversarial-epsilon",
        type=float,
        help="L2 norm of each example's FGM perturbation. Default: 0.1.",
    )
    training.add_argument(
        "--tune-thresholds",
        action=argparse.BooleanOptionalAction,
        help="Binary tasks: after training, pick the threshold on the second label's "
        "probability that maximises dev macro-F1; multi-label tasks: each label's threshold "
        "that maximises its dev F1. Evaluation, predict and the exports apply them. "
        "Default: off.",
    )
    training.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        help="Enable TensorFlow op determinism: reruns give identical losses. Default: off.",
    )
    distribution = parser.add_argument_group("distribution and speed")
    distribution.add_argument(
        "--strategy",
        choices=["auto", "mirrored", "multi_worker", "one_device"],
        help="auto: multi_worker when TF_CONFIG names a cluster, else mirrored over all "
        "local GPUs (or the CPU). Default: auto.",
    )
    distribution.add_argument(
        "--cpu-devices",
        type=int,
        help="Split the CPU into N devices and mirror over them (multi-replica without GPUs).",
    )
    distribution.add_argument(
        "--backup-every-steps",
        type=int,
        help="Save the state for resuming every N steps, besides each epoch end. Default: 200.",
    )
    distribution.add_argument(
        "--mixed-precision",
        choices=["auto", "off", "bfloat16", "float16"],
        help="Compute type for training; saved models stay float32. auto: bfloat16 on GPUs "
        "of compute capability 8.0+, float16 on 7.x, off on the CPU. Default: auto.",
    )
    distribution.add_argument(
        "--jit-compile",
        choices=["auto", "on", "off"],
        help="XLA for each replica's step. auto: on with GPUs, off on the CPU and with "
        "--deterministic. Default: auto.",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--run-name", help="Name of the run. Default: run-<date>-<time>.")
    output.add_argument("--log-dir", help="TensorBoard root. Default: tensorboard_logs.")
    output.add_argument("--export-dir", help="Root of runs and SavedModels. Default: exported.")
    output.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        help="Export SavedModel, TFLite and ONNX at the end. Default: on.",
    )
    tensorboard = parser.add_argument_group("TensorBoard")
    tensorboard.add_argument(
        "--summaries",
        action=argparse.BooleanOptionalAction,
        help="Per-epoch dev analysis in TensorBoard: per-label P/R/F1, confusion matrices, "
        "precision-recall curves, most wrong examples, histograms, HParams. Default: on.",
    )
    tensorboard.add_argument(
        "--histogram-every-epochs",
        type=int,
        help="Feedback weight and state histograms every N epochs; 0 is off. Default: 1 for "
        "feedback layers of at most 1M weights, else 0.",
    )
    tensorboard.add_argument(
        "--most-wrong-examples",
        type=int,
        help="Rows of the most-wrong dev examples table each epoch. Default: 20.",
    )
    tensorboard.add_argument(
        "--profile-batches",
        help="Profile these batches of the first epoch into TensorBoard, as FIRST,LAST "
        "(1-based), such as 10,20. Default: off.",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bar; warnings only.")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)

    from fnn_keras.backbones import BackboneError
    from fnn_keras.config import (
        ConfigError,
        config_from_dict,
        inactive_settings,
        load_yaml,
        merge_overrides,
        mode_flag,
    )
    from fnn_keras.data.labels import LabelError
    from fnn_keras.data.readers import DataError
    from fnn_keras.export.exporter import artifact_lines, failure_message
    from fnn_keras.training.callbacks import NonFiniteLossError
    from fnn_keras.training.trainer import new_run_name, train

    run_name = None
    config = None
    try:
        values = load_yaml(args.config) if args.config else {}
        overrides = {
            field: getattr(args, flag)
            for flag, field in FLAG_FIELDS.items()
            if getattr(args, flag) is not None
        }
        source = args.config or "command line"
        config = config_from_dict(merge_overrides(values, overrides), source)
        explicit = set(overrides) | {
            f"{section}.{key}" for section, keys in values.items() for key in (keys or {})
        }
        flags = {field: "--" + dest.replace("_", "-") for dest, field in FLAG_FIELDS.items()}
        for name in inactive_settings(config, explicit):
            logging.getLogger("fnn_keras.train").warning(
                "%s (%s) has no effect without %s.", name, flags[name], mode_flag(name)
            )
        output = config.output
        run_name = output.run_name or new_run_name(output.export_dir, output.log_dir)
        config = dataclasses.replace(config, output=dataclasses.replace(output, run_name=run_name))
        result = train(
            config,
            verbose=0 if args.quiet else "auto",
            tf_config=os.environ.get("TF_CONFIG"),
        )
    except (ConfigError, DataError, LabelError, BackboneError) as error:
        fail(str(error))
    except OSError as error:
        # Unwritable output directories, full disks and the like.
        fail(os_error_message(error))
    except NonFiniteLossError as error:
        fail(str(error), code=EXIT_NON_FINITE_LOSS)
    except KeyboardInterrupt:
        resume = f" with --run-name {run_name}" if run_name else ""
        if config is not None and config.data.task == "tagging":
            # Tagging runs keep no backup, so a rerun trains from the start.
            fail(f"interrupted; rerun the same command{resume} to train from the start.")
        fail(f"interrupted; rerun the same command{resume} to resume.")

    paths = result.paths
    resumed = f", resumed at step {result.resumed_at}" if result.resumed_at is not None else ""
    trained = (
        f"{result.epochs_run} epoch(s), {result.steps_run} step(s) in "
        f"{result.train_seconds:.0f} s{resumed}"
    )
    if not result.chief:
        print(
            f"Run {paths.run_name}: worker trained {trained}, weights digest "
            f"{result.weights_digest}; the chief writes the outputs."
        )
        return
    metrics = result.metrics
    print(f"Run {paths.run_name}: {trained}")
    print(metrics_line(metrics))
    print(
        f"TensorBoard logs: {paths.log_dir}   (tensorboard --logdir {os.path.dirname(paths.log_dir) or '.'})"
    )
    print(f"Report:           {os.path.join(paths.run_dir, 'report.md')}")
    print(f"Keras model:      {paths.model}   (weights digest {result.weights_digest})")
    if result.export_report is not None:
        for line in artifact_lines(result.export_report):
            print(f"Export {line}")
        print(f"Export report:    {paths.export_report}")
        failure = failure_message(result.export_report)
        if failure:
            fail(failure)


if __name__ == "__main__":
    main()
