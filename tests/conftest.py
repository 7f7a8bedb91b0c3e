"""Shared fixtures: the tiny backbone, small data files and a trained run."""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices before TensorFlow starts its
# runtime (it refuses afterwards), so tests can run MirroredStrategy with
# two replicas. Single-device code still runs on /cpu:0.
_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


def run_python(args, cwd, timeout=900):
    """Run `python ARGS` in a fresh process with the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _scalar_events(directory):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {tag: accumulator.Tensors(tag) for tag in accumulator.Tags()["tensors"]}


def scalar_steps(directory):
    """Map each scalar tag in a TensorBoard directory to its steps, in file order."""
    return {
        tag: [event.step for event in events] for tag, events in _scalar_events(directory).items()
    }


def scalar_values(directory, tag):
    """Map each step of one scalar tag in a TensorBoard directory to its value."""
    return {
        event.step: float(tf.make_ndarray(event.tensor_proto))
        for event in _scalar_events(directory)[tag]
    }


def assert_one_line_error(err, *fragments):
    """Check that stderr contains one `error:` line naming each fragment."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# Nine short labelled texts for step-level tests (1 positive, 0 negative).
STEP_TEXTS = [
    "a good film",
    "great fun and i love it",
    "the worst service",
    "boring",
    "really fine food",
    "i hate this phone",
    "not good at all",
    "the best book",
    "awful",
]
STEP_LABELS = [1, 1, 0, 0, 1, 0, 0, 1, 0]


def tiny_backbone_without_dropout(seed):
    """A fresh tiny BERT with dropout 0, so every forward pass is the same."""
    import keras

    from fnn_keras.backbones import TINY_CONFIG, ExactGeluBertBackbone, tiny_vocabulary

    keras.utils.set_random_seed(seed)
    return ExactGeluBertBackbone(vocabulary_size=len(tiny_vocabulary()), dropout=0.0, **TINY_CONFIG)


def write_tsv(path, rows, header=("text", "label")):
    """Write rows as an unquoted TSV file with a header."""
    with open(path, "w", encoding="utf-8") as file:
        file.write("\t".join(header) + "\n")
        for row in rows:
            file.write("\t".join(row) + "\n")
    return str(path)


SMALL_TRAIN = [
    ("a good film", "pos"),
    ("great fun and i love it", "pos"),
    ("the best book", "pos"),
    ("really fine food", "pos"),
    ("a bad film", "neg"),
    ("boring and awful", "neg"),
    ("the worst service", "neg"),
    ("i hate this phone", "neg"),
    ("很好的电影", "pos"),
    ("服务很坏", "neg"),
]
SMALL_DEV = [
    ("good fun", "pos"),
    ("terrible book", "neg"),
    ("i like the story", "pos"),
    ("not good at all", "neg"),
]


@pytest.fixture(scope="session")
def two_cpus():
    """Names of the two logical CPU devices, for 2-replica MirroredStrategy."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, devices
    return devices[:2]


@pytest.fixture(scope="session")
def strategies(two_cpus):
    """MirroredStrategy over 1 and over 2 logical CPUs, shared by all tests.

    TensorFlow 2.21 numbers collective ops per strategy object: a second
    MirroredStrategy over the same devices in one process reuses the first
    one's numbers, and its all-reduces then fail with "Shape mismatch in the
    collective instance". So every test uses these two.
    """
    return {
        1: tf.distribute.MirroredStrategy(two_cpus[:1]),
        2: tf.distribute.MirroredStrategy(two_cpus),
    }


@pytest.fixture(scope="session")
def tiny_bundle():
    from fnn_keras.backbones import load_backbone

    return load_backbone("tiny", seed=1)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_data")
    train = write_tsv(root / "train.tsv", SMALL_TRAIN)
    dev = write_tsv(root / "dev.tsv", SMALL_DEV)
    return train, dev


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_data):
    """A 2-epoch tiny training run through the CLI, in a fresh process."""
    workdir = tmp_path_factory.mktemp("cli_run")
    train, dev = small_data
    result = run_python(
        [
            "-m",
            "fnn_keras.train",
            "--backbone",
            "tiny",
            "--train",
            train,
            "--dev",
            dev,
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--log-every-steps",
            "2",
            "--profile-batches",
            "2,3",
            "--run-name",
            "tiny-run",
            "--quiet",
        ],
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result
