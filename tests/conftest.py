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


def assert_one_line_error(err, *fragments):
    """Check that stderr contains one `error:` line naming each fragment."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


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
            "--run-name",
            "tiny-run",
            "--quiet",
        ],
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result
