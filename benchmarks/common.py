"""Shared parts of every benchmark row: the protocol, the data sample, FLOP counts."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys

import numpy as np


@dataclasses.dataclass
class Protocol:
    """The settings every row of one benchmark invocation runs with.

    Attributes:
        data_dir: Folder with SST-2's `train.tsv` and `dev.tsv`.
        sample_size: Training sentences drawn from `train.tsv`.
        seed: Seed of the sample and of every row's batch order and weights.
        batch_size: Global batch size of every training row.
        sequence_length: Maximum tokens per text that fnn_keras keeps, and the fixed length
            of the padded rows.
        warmup_steps: Training steps run before timing starts.
        steps_per_repeat: Timed steps in one repeat.
        repeats: Timed repeats; rates are the median over them.
        latency_texts: Dev texts timed one at a time.
        latency_batches: Batches of `batch_size` dev texts timed.
    """

    data_dir: str = os.path.join("..", "shared", "data", "sst2")
    sample_size: int = 2048
    seed: int = 0
    batch_size: int = 32
    sequence_length: int = 128
    warmup_steps: int = 10
    steps_per_repeat: int = 16
    repeats: int = 3
    latency_texts: int = 100
    latency_batches: int = 10

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps_per_repeat * self.repeats

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Protocol:
        return cls(**json.loads(text))


def load_sample(protocol: Protocol) -> tuple[list[str], np.ndarray]:
    """Draw the fixed training sample: `sample_size` rows of SST-2 `train.tsv`.

    Returns:
        The texts and their int label ids (SST-2 labels are 0 and 1).

    Example:

    ```python
    texts, label_ids = load_sample(Protocol())
    ```
    """
    from fnn_keras.data.readers import read_examples

    examples = read_examples(os.path.join(protocol.data_dir, "train.tsv"))
    if len(examples) < protocol.sample_size:
        raise SystemExit(
            f"error: {protocol.data_dir}/train.tsv has {len(examples)} rows, fewer than "
            f"the sample of {protocol.sample_size}; pass a smaller --sample-size."
        )
    rows = np.random.default_rng(protocol.seed).choice(
        len(examples), protocol.sample_size, replace=False
    )
    texts = [examples.texts[i] for i in rows]
    label_ids = np.array([int(examples.labels[i]) for i in rows], np.int32)
    return texts, label_ids


def load_dev_texts(protocol: Protocol) -> list[str]:
    """Return the SST-2 dev texts, in file order."""
    from fnn_keras.data.readers import read_examples

    return read_examples(os.path.join(protocol.data_dir, "dev.tsv")).texts


def plain_batches(protocol: Protocol) -> list[np.ndarray]:
    """Cut the sample's first epoch order into batches, as a fixed-padding recipe does.

    Every row without bucketing trains on these batches, in this order.
    """
    from fnn_keras.data.pipeline import epoch_order

    order = epoch_order(protocol.sample_size, protocol.seed, 0)
    size = protocol.batch_size
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    return batches[: protocol.total_steps]


def encoder_shape(model_dir: str) -> dict:
    """Read layers, hidden width and feed-forward width from a BERT `config.json`."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as file:
        config = json.load(file)
    return {
        "layers": config["num_hidden_layers"],
        "hidden": config["hidden_size"],
        "intermediate": config["intermediate_size"],
    }


def training_flops(shape: dict, lengths) -> float:
    """FLOPs of one training step of the encoder over texts of the given lengths.

    Counts the encoder's matrix products, forward and backward (3x the
    forward): per token and layer the four attention projections and the
    two feed-forward products, `2 * (4 d^2 + 2 d f)` forward; per text and
    layer the two attention products, `4 n^2 d` forward. Embeddings,
    softmax, normalization and the classification head are left out; the
    feedback head adds about 2% to the MiniLM count.

    Args:
        shape: The output of `encoder_shape`.
        lengths: Tokens of each text as the model runs it: its real length
            for useful FLOPs, the padded length for executed FLOPs.

    Returns:
        The FLOP count.

    Example:

    ```python
    training_flops({"layers": 6, "hidden": 384, "intermediate": 1536}, [20, 31])
    ```
    """
    lengths = np.asarray(lengths, np.float64)
    d, f = shape["hidden"], shape["intermediate"]
    per_layer = 3 * (2 * (4 * d * d + 2 * d * f) * lengths + 4 * lengths**2 * d)
    return float(shape["layers"] * per_layer.sum())


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def write_json(path: str, payload: dict) -> None:
    """Write `payload` to `path` as indented UTF-8 JSON."""
    with open(path, "w", encoding="utf-8") as file:
        json.dump(payload, file, ensure_ascii=False, indent=2)
