"""Training throughput rows, one per process so that each has its own peak memory.

    python -m benchmarks.training_rows ROW PROTOCOL_JSON OUTPUT_JSON

`benchmarks.run` starts this module once per row. The output contains the
end time of every step and the token lengths of every batch, which `run`
turns into rates.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from benchmarks.common import Protocol, load_sample, peak_memory_mb, plain_batches, write_json

# Row name to what it trains; `run` shows the descriptions in the table.
ROWS = {
    "fnn_keras": "fnn_keras, its defaults (feedback head, length bucketing)",
    "fnn_keras_pooled": "fnn_keras with the pooled output in place of the feedback head",
    "keras_hub_128": "keras-hub BertTextClassifier, sequence_length=128",
    "keras_hub_default": "keras-hub BertTextClassifier, the preset's default preprocessing",
    "torch_128": "PyTorch: transformers BertForSequenceClassification, max_length=128, AdamW",
    "fnn_keras_xla": "fnn_keras with --jit-compile on",
    "fnn_keras_unbucketed": "fnn_keras with --no-bucket-by-length",
}
DEFAULT_ROWS = ("fnn_keras", "fnn_keras_pooled", "keras_hub_128", "keras_hub_default", "torch_128")


def _keras_timer():
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Record the time at which each training step's loss is ready."""

        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(logs["loss"])  # waits for the step on asynchronous devices
            self.ends.append(time.perf_counter())

    return StepTimer()


def _pooled_classifier(backbone, num_labels: int, dropout: float, seed: int):
    import keras

    from fnn_keras.models.classifier import INPUT_NAMES

    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}
    pooled = backbone(inputs)["pooled_output"]
    pooled = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(pooled)
    probabilities = keras.layers.Dense(
        num_labels, activation="softmax", dtype="float32", name="probabilities"
    )(pooled)
    return keras.Model(inputs, probabilities, name="pooled_classifier")


def fnn_keras_row(protocol: Protocol, row: str) -> dict:
    """Train fnn_keras as `python -m fnn_keras.train` builds it."""
    import keras

    from fnn_keras.backbones import load_backbone
    from fnn_keras.config import Config
    from fnn_keras.data.pipeline import (
        bucketed_batches,
        build_preprocessor,
        make_training_dataset,
    )
    from fnn_keras.data.summary import token_lengths
    from fnn_keras.training.precision import precision_policy, resolve_mixed_precision
    from fnn_keras.training.strategy import build_strategy
    from fnn_keras.training.train_model import build_training_model
    from fnn_keras.training.trainer import XLA_LENGTH_MULTIPLE, resolve_jit_compile

    config = Config()
    config.training.seed = protocol.seed
    config.training.batch_size = protocol.batch_size
    config.data.sequence_length = protocol.sequence_length
    if row == "fnn_keras_xla":
        config.training.jit_compile = "on"
    if row == "fnn_keras_unbucketed":
        config.data.bucket_by_length = False
    training = config.training

    texts, label_ids = load_sample(protocol)
    strategy = build_strategy(training.strategy)
    jit_compile = resolve_jit_compile(training.jit_compile, training.deterministic)
    mixed_precision = resolve_mixed_precision(training.mixed_precision)
    keras.utils.set_random_seed(protocol.seed)
    with strategy.scope(), precision_policy(mixed_precision):
        bundle = load_backbone(config.model.backbone, seed=protocol.seed)
        classifier = None
        if row == "fnn_keras_pooled":
            classifier = _pooled_classifier(bundle.backbone, 2, config.model.dropout, protocol.seed)
        model = build_training_model(
            config, bundle.backbone, 2, protocol.total_steps, jit_compile, classifier
        )
    lengths = token_lengths(bundle.tokenizer, texts)
    multiple = XLA_LENGTH_MULTIPLE if jit_compile else 1
    if config.data.bucket_by_length:
        batches = bucketed_batches(lengths, protocol.batch_size, protocol.seed, 0)
    else:
        batches = plain_batches(protocol)
    batches = batches[: protocol.total_steps]
    data = make_training_dataset(
        texts,
        label_ids.tolist(),
        build_preprocessor(bundle.tokenizer, protocol.sequence_length),
        protocol.batch_size,
        seed=protocol.seed,
        first_epoch=0,
        end_epoch=1,
        lengths=lengths if config.data.bucket_by_length else None,
        pad_to_multiple=multiple,
    )
    timer = _keras_timer()
    model.fit(
        data,
        epochs=1,
        steps_per_epoch=protocol.total_steps,
        callbacks=[timer],
        verbose=0,
        shuffle=False,
    )
    real = [np.minimum(lengths[batch], protocol.sequence_length) for batch in batches]
    padded = [min(-(-int(r.max()) // multiple) * multiple, protocol.sequence_length) for r in real]
    return {
        "step_ends": timer.ends,
        "real_lengths": [r.tolist() for r in real],
        "padded_lengths": padded,
        "settings": {
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "jit_compile": jit_compile,
            "mixed_precision": mixed_precision,
            "bucket_by_length": config.data.bucket_by_length,
            "head": "pooled" if row == "fnn_keras_pooled" else "feedback",
        },
    }


def keras_hub_row(protocol: Protocol, row: str) -> dict:
    """Train keras-hub's `BertTextClassifier` with its default compile settings."""
    import keras
    import keras_hub
    import tensorflow as tf

    from fnn_keras.backbones import minilm_path
    from fnn_keras.data.summary import token_lengths

    texts, label_ids = load_sample(protocol)
    keras.utils.set_random_seed(protocol.seed)
    classifier = keras_hub.models.BertTextClassifier.from_preset(minilm_path(), num_classes=2)
    if row == "keras_hub_128":
        classifier.preprocessor.sequence_length = protocol.sequence_length
    sequence_length = classifier.preprocessor.sequence_length
    # Adam at 5e-5, cross-entropy on logits, accuracy: keras-hub's defaults.
    classifier.compile()

    batches = plain_batches(protocol)
    order = np.concatenate(batches)
    data = tf.data.Dataset.from_tensor_slices(
        (tf.constant([texts[i] for i in order]), tf.constant(label_ids[order]))
    ).batch(protocol.batch_size)
    timer = _keras_timer()
    # keras-hub's `fit` maps the preprocessor over the dataset itself.
    classifier.fit(
        data, epochs=1, steps_per_epoch=protocol.total_steps, callbacks=[timer], verbose=0
    )
    lengths = token_lengths(classifier.preprocessor.tokenizer, texts)
    real = [np.minimum(lengths[batch], sequence_length) for batch in batches]
    return {
        "step_ends": timer.ends,
        "real_lengths": [r.tolist() for r in real],
        "padded_lengths": [sequence_length] * len(batches),
        "settings": {
            "sequence_length": sequence_length,
            "jit_compile": bool(classifier.jit_compile),
            "optimizer": type(classifier.optimizer).__name__,
        },
    }


def torch_row(protocol: Protocol, row: str) -> dict:
    """Train Hugging Face `BertForSequenceClassification` the usual PyTorch way."""
    try:
        import torch
        import transformers
    except ImportError:
        raise SystemExit(
            "error: the torch_128 row needs PyTorch and transformers; install them with "
            "`pip install -e .[bench]`, or leave the row out with --rows."
        ) from None

    from fnn_keras.backbones import minilm_path

    texts, label_ids = load_sample(protocol)
    torch.manual_seed(protocol.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    model = transformers.BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)

    batches = plain_batches(protocol)
    ends = []
    real = []
    for batch in batches:
        encoded = tokenizer(
            [texts[i] for i in batch],
            padding="max_length",
            truncation=True,
            max_length=protocol.sequence_length,
            return_tensors="pt",
        )
        real.append(encoded["attention_mask"].sum(dim=1).tolist())
        outputs = model(**encoded, labels=torch.tensor(label_ids[batch], dtype=torch.long))
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ends.append(time.perf_counter())
    return {
        "step_ends": ends,
        "real_lengths": real,
        "padded_lengths": [protocol.sequence_length] * len(batches),
        "settings": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
        },
    }


def main(argv: list[str]) -> None:
    row, protocol_json, output = argv
    protocol = Protocol.from_json(protocol_json)
    if row.startswith("fnn_keras"):
        result = fnn_keras_row(protocol, row)
    elif row.startswith("keras_hub"):
        result = keras_hub_row(protocol, row)
    else:
        result = torch_row(protocol, row)
    result["row"] = row
    result["peak_memory_mb"] = peak_memory_mb()
    write_json(output, result)


if __name__ == "__main__":
    main(sys.argv[1:])
