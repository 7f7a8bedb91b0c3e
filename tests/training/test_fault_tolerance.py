"""Whole runs in fresh processes: resume after SIGKILL, multi-worker, precision, XLA."""

import collections
import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import fnn_keras  # noqa: F401  (registers the custom layers for loading)
from conftest import REPO_ROOT, run_python, scalar_steps, scalar_values

# Runs the training CLI and kills its own process with SIGKILL right after
# the given optimizer step, as a crash or an out-of-memory kill would.
KILL_AFTER_STEP = textwrap.dedent(
    """
    import os, signal, sys
    from keras import ops
    from fnn_keras.training import callbacks
    from fnn_keras.train import main

    kill_at = int(sys.argv[1])
    save = callbacks.TrainingBackup.on_train_batch_end

    def save_then_maybe_die(self, batch, logs=None):
        save(self, batch, logs)
        if int(ops.convert_to_numpy(self.model.optimizer.iterations)) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks.TrainingBackup.on_train_batch_end = save_then_maybe_die
    main(sys.argv[2:])
    """
)


def python_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def load_weights(path):
    return keras.saving.load_model(path).get_weights()


def test_resume_after_sigkill_matches_whole_run(small_data, tmp_path):
    train, dev = small_data
    # 10 examples in batches of 2: 5 steps per epoch, 25 in all. Step 13 is
    # in the middle of epoch 3; the last backup before it is step 12.
    common = [
        "--backbone", "tiny", "--train", train, "--dev", dev, "--batch-size", "2",
        "--epochs", "5", "--patience", "5", "--backup-every-steps", "2",
        "--log-every-steps", "1", "--deterministic", "--no-export", "--quiet",
    ]  # fmt: skip
    script = tmp_path / "kill_after_step.py"
    script.write_text(KILL_AFTER_STEP)
    env = python_env()
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), "13", *common, "--run-name", "killed"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "fnn_keras.train", *common, "--run-name", "whole"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    killed, whole = (process.communicate(timeout=600) for process in processes)
    assert processes[0].returncode == -9, killed[1][-3000:]
    assert processes[1].returncode == 0, whole[1][-3000:]
    with open(tmp_path / "exported" / "killed" / "backup" / "state.json") as file:
        assert json.load(file)["global_step"] == 12

    resumed = run_python(
        ["-m", "fnn_keras.train", *common, "--run-name", "killed"], cwd=tmp_path, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "3 epoch(s), 13 step(s)" in resumed.stdout
    assert "resumed at step 12" in resumed.stdout
    assert not os.path.exists(tmp_path / "exported" / "killed" / "backup")

    exported = tmp_path / "exported"
    for one, two in zip(
        load_weights(exported / "whole" / "model.keras"),
        load_weights(exported / "killed" / "model.keras"),
        strict=True,
    ):
        np.testing.assert_allclose(one, two, atol=1e-5)

    logs = tmp_path / "tensorboard_logs" / "killed"
    train_steps = scalar_steps(str(logs / "train"))
    assert train_steps["batch_loss"] == list(range(1, 26))
    assert train_steps["epoch_loss"] == [0, 1, 2, 3, 4]
    for directory in ("train", "validation"):
        for tag, steps in scalar_steps(str(logs / directory)).items():
            repeated = [step for step, count in collections.Counter(steps).items() if count > 1]
            assert not repeated, (directory, tag, repeated)

    # Two deterministic runs log identical losses. In epoch 3 the resumed
    # run averages only the steps after the restart, so it is left out.
    killed_losses = scalar_values(str(logs / "train"), "batch_loss")
    whole_losses = scalar_values(
        str(tmp_path / "tensorboard_logs" / "whole" / "train"), "batch_loss"
    )
    for step in [*range(1, 11), *range(16, 26)]:
        assert killed_losses[step] == whole_losses[step], step
    dev_losses = [
        scalar_values(str(tmp_path / "tensorboard_logs" / run / "validation"), "epoch_loss")
        for run in ("killed", "whole")
    ]
    assert dev_losses[0] == dev_losses[1]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_workers(command, tmp_path, cwd_for):
    """Start two workers of one cluster on 127.0.0.1; return their processes."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        temp = tmp_path / f"tmp{index}"
        temp.mkdir()
        processes.append(
            subprocess.Popen(
                command,
                cwd=cwd_for(index),
                env=python_env(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(temp)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def finish(processes, timeout=300):
    """Wait for the processes; kill them all and fail if any runs past `timeout`."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"multi-worker processes still running after {timeout} s")
    return outputs


def test_two_workers_agree_and_only_chief_writes(tmp_path):
    rows = [("a good film", "pos"), ("the worst service", "neg")] * 20
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        with open(data / name, "w", encoding="utf-8") as file:
            file.write("text\tlabel\n")
            file.writelines(f"{text}\t{label}\n" for text, label in rows)
    directories = [tmp_path / "chief", tmp_path / "worker"]
    for directory in directories:
        directory.mkdir()
    # 40 examples, global batch 4: 10 steps per epoch on 2 replicas.
    command = [
        sys.executable, "-m", "fnn_keras.train", "--backbone", "tiny",
        "--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"),
        "--epochs", "2", "--batch-size", "4", "--run-name", "cluster", "--quiet",
        "--bucket-by-length",
    ]  # fmt: skip
    processes = start_workers(command, tmp_path, lambda index: directories[index])
    (chief_out, chief_err), (worker_out, worker_err) = finish(processes)
    assert processes[0].returncode == 0, chief_err[-3000:]
    assert processes[1].returncode == 0, worker_err[-3000:]

    assert "2 epoch(s), 20 step(s)" in chief_out
    assert "worker trained 2 epoch(s), 20 step(s)" in worker_out
    chief_digest = chief_out.split("weights digest ")[1].split(")")[0]
    worker_digest = worker_out.split("weights digest ")[1].split(";")[0]
    assert chief_digest == worker_digest

    run_dir = directories[0] / "exported" / "cluster"
    assert (run_dir / "checkpoints" / "best.weights.h5").is_file()
    assert (run_dir / "model.keras").is_file()
    assert (run_dir / "1" / "saved_model.pb").is_file()
    assert os.listdir(directories[0] / "tensorboard_logs" / "cluster" / "train")
    # The chief wrote the dev analysis each epoch.
    dev_tags = scalar_steps(str(directories[0] / "tensorboard_logs" / "cluster" / "validation"))
    for tag in ("epoch_accuracy", "epoch_macro_f1", "confusion_matrix/counts", "most_wrong"):
        assert dev_tags[tag] == [0, 1], tag
    # The worker wrote nothing where it ran, and removed its temporary files.
    assert os.listdir(directories[1]) == []
    assert os.listdir(tmp_path / "tmp1") == []


def test_workers_with_different_backups_stop(tmp_path, small_data):
    """A worker that cannot see the chief's backup must not hang the cluster."""
    train, dev = small_data
    directories = [tmp_path / "chief", tmp_path / "worker"]
    backup = directories[0] / "exported" / "cluster" / "backup"
    backup.mkdir(parents=True)
    directories[1].mkdir()
    (backup / "step-000000002.weights.h5").write_bytes(b"")
    state = {
        "global_step": 2,
        "steps_per_epoch": 3,
        "weights": "step-000000002.weights.h5",
        "seed_states": [],
        "early_stopping": {"wait": 0, "best": None, "best_epoch": 0, "stopped_epoch": 0},
        "best_value": None,
    }
    (backup / "state.json").write_text(json.dumps(state))
    command = [
        sys.executable, "-m", "fnn_keras.train", "--backbone", "tiny", "--train", train,
        "--dev", dev, "--batch-size", "4", "--run-name", "cluster", "--quiet", "--no-export",
    ]  # fmt: skip
    processes = start_workers(command, tmp_path, lambda index: directories[index])
    outputs = finish(processes)
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 2, err[-3000:]
        assert "Traceback" not in err
        assert "error: workers disagree on where to resume" in err
        # The chief's fake backup lacks the run settings, so it is unusable
        # there too; the worker has none.
        assert "steps [-1, 0] across the cluster" in err


# Plain Keras 3.15 `fit` under MultiWorkerMirroredStrategy, without the
# workarounds in `TrainingModel`.
PLAIN_KERAS_WORKER = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        inputs = {"a": keras.Input((3,), name="a")}
        outputs = keras.layers.Dense(1)(inputs["a"])
        model = keras.Model(inputs, outputs)
        model.compile("adam", "mse")
    data = tf.data.Dataset.from_tensor_slices(({"a": np.ones((8, 3))}, np.zeros((8, 1))))
    model.fit(data.batch(4), epochs=1, verbose=0)
    """
)


def test_plain_keras_still_fails_under_multi_worker(tmp_path):
    """Shows that `TrainingModel`'s multi-worker workarounds are still needed.

    When this test fails, Keras runs `fit` under
    MultiWorkerMirroredStrategy by itself: remove `_maybe_symbolic_build`
    and `_logs_for_reduction` from `TrainingModel`, and this test.
    """
    script = tmp_path / "plain_worker.py"
    script.write_text(PLAIN_KERAS_WORKER)
    processes = start_workers([sys.executable, str(script)], tmp_path, lambda index: tmp_path)
    outputs = finish(processes)
    errors = " ".join(err for _, err in outputs)
    assert all(process.returncode != 0 for process in processes), errors[-3000:]
    # The first of the two failures: the symbolic build's average of a
    # per-replica batch.
    assert "Attempt to convert a value ({'a': PerReplica" in errors, errors[-3000:]


def test_bfloat16_and_xla_runs_export_with_parity(small_data, tmp_path):
    train, dev = small_data
    runs = {
        "bfloat16": ["--mixed-precision", "bfloat16", "--bucket-by-length"],
        "xla": ["--jit-compile", "on"],
        "float16": ["--mixed-precision", "float16", "--no-export", "--log-every-steps", "1"],
    }
    # All runs at once: most of their time is export, on one core each.
    processes = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fnn_keras.train",
                "--backbone",
                "tiny",
                "--train",
                train,
                "--dev",
                dev,
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--cpu-devices",
                "2",
                "--run-name",
                name,
                *flags,
            ],  # fmt: skip
            cwd=tmp_path,
            # XLA writes each module it compiles here.
            env=python_env(XLA_FLAGS=f"--xla_dump_to={tmp_path / 'xla_dump' / name}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, flags in runs.items()
    }
    errors = {name: process.communicate(timeout=900)[1] for name, process in processes.items()}

    for name, process in processes.items():
        assert process.returncode == 0, errors[name][-3000:]
        assert "MirroredStrategy over 2 replica(s)" in errors[name]
        if name == "float16":
            continue
        run_dir = tmp_path / "exported" / name
        with open(run_dir / "metrics.json") as file:
            assert np.isfinite(json.load(file)["accuracy"])
        with open(run_dir / "export_report.json") as file:
            report = json.load(file)
        assert report["failed"] == [], report
        formats = {entry["format"] for entry in report["artifacts"]}
        assert formats == {"saved_model", "tflite", "onnx"}
        config = keras.saving.load_model(run_dir / "model.keras").get_config()
        assert "mixed_" not in json.dumps(config)

    assert "Training with bfloat16 compute" in errors["bfloat16"]
    assert "XLA on" in errors["xla"]
    # The per-replica forward and backward pass was compiled by XLA, under
    # the strategy, and nothing was compiled without --jit-compile.
    compiled = os.listdir(tmp_path / "xla_dump" / "xla")
    assert any("loss_sum_and_gradients" in name for name in compiled), compiled[:10]
    assert not os.path.exists(tmp_path / "xla_dump" / "bfloat16")

    # float16 scales the loss; the scale is logged each step, and the
    # gradient norm is of the unscaled gradient.
    assert "Training with float16 compute" in errors["float16"]
    train_logs = str(tmp_path / "tensorboard_logs" / "float16" / "train")
    steps = scalar_steps(train_logs)
    # 10 examples at global batch 4: 3 steps, minus any skipped for overflow.
    assert steps["batch_loss_scale"] == sorted(set(steps["batch_loss_scale"]))
    assert steps["batch_loss_scale"] == steps["batch_gradient_norm"]
    scales = scalar_values(train_logs, "batch_loss_scale")
    assert all(scale >= 1 for scale in scales.values()), scales
