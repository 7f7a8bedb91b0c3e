import glob
import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_one_line_error, run_python
from fnn_keras import predict as predict_cli
from fnn_keras.export import __main__ as export_cli
from fnn_keras.export import exporter, savedmodel, tflite
from fnn_keras.export.predictors import load_predictor
from fnn_keras.export.trained_run import load_trained_run

TEXTS = ["a good film", "I hate this phone.", "很好的电影", "服务很坏", ""]


@pytest.fixture(scope="module")
def run_dir(trained_run):
    workdir, _ = trained_run
    return os.path.join(workdir, "exported", "tiny-run")


@pytest.fixture(scope="module")
def report(run_dir):
    with open(os.path.join(run_dir, "export_report.json"), encoding="utf-8") as file:
        return json.load(file)


def entries(report, fmt):
    return {entry.get("variant"): entry for entry in report["artifacts"] if entry["format"] == fmt}


def test_report_lists_every_artifact(report):
    assert report["failed"] == []
    assert set(entries(report, "saved_model")) == {"serving_default", "predict_ids", "ids_only"}
    assert set(entries(report, "tflite")) == {"float32", "float16", "dynamic_int8", "full_int8"}
    assert set(entries(report, "onnx")) == {"opset17"}
    for entry in report["artifacts"]:
        assert entry["size_bytes"] > 0
        assert entry["parity"]["examples"] == report["parity_examples"] == 4
        assert "accuracy" in entry["parity"]


def test_saved_model_parity(report):
    for variant, entry in entries(report, "saved_model").items():
        assert entry["parity"]["max_abs_diff"] <= 1e-5, variant
        assert entry["parity"]["top1_agreement"] == 1.0, variant
    text_ops = entries(report, "saved_model")["serving_default"]["non_core_ops"]
    assert "FastWordpieceTokenizeWithOffsets" in text_ops
    assert "TFText>RoundRobinTrim" not in text_ops
    assert entries(report, "saved_model")["ids_only"]["non_core_ops"] == []


def test_onnx_parity_at_each_shape(report):
    entry = entries(report, "onnx")["opset17"]
    assert set(entry["parity_by_shape"]) == {
        "batch_32_longest_in_batch",
        "batch_1_unpadded",
        "batch_32_padded_to_128",
    }
    for shape, result in entry["parity_by_shape"].items():
        assert result["max_abs_diff"] <= 1e-4, shape
    assert entry["string_ops"] == []
    assert [i["name"] for i in entry["inputs"]] == ["padding_mask", "segment_ids", "token_ids"]


def test_tflite_parity_and_builtin_ops(report, run_dir):
    variants = entries(report, "tflite")
    assert variants["float32"]["parity"]["max_abs_diff"] <= 1e-4
    # Quantization error on a random 2-layer model; the SST-2 figures for
    # top-1 agreement are in the README.
    assert variants["float16"]["parity"]["max_abs_diff"] <= 5e-3
    assert variants["dynamic_int8"]["parity"]["max_abs_diff"] <= 0.1
    # full_int8 ships only when it meets its bar.
    full_int8 = variants["full_int8"]
    full_int8_path = os.path.join(run_dir, "tflite", "model_full_int8.tflite")
    assert os.path.exists(full_int8_path) == ("not_shipped" not in full_int8)
    assert ("not_shipped" in full_int8) == bool(full_int8["bar_misses"])
    for variant in ("float32", "float16", "dynamic_int8"):
        path = os.path.join(run_dir, "tflite", f"model_{variant}.tflite")
        ops = tflite.tflite_op_names(path)
        assert tflite.non_builtin_ops(ops) == [], variant
        assert "FULLY_CONNECTED" in ops or "BATCH_MATMUL" in ops
        assert "WHILE" not in ops, variant
        signatures = variants[variant]["signatures"]
        assert set(signatures) == {f"length_{n}" for n in (16, 32, 64, 128)}
        for name, signature in signatures.items():
            length = int(name.split("_")[1])
            assert {k: v["shape"] for k, v in signature["inputs"].items()} == {
                "token_ids": [1, length],
                "segment_ids": [1, length],
                "padding_mask": [1, length],
            }
    for name in ("vocab.txt", "tokenizer.json", "labels.json"):
        assert os.path.isfile(os.path.join(run_dir, "tflite", name))


def test_saved_model_loads_without_fnn_keras(run_dir, tmp_path):
    reference = load_predictor(os.path.join(run_dir, "model.keras")).predict(TEXTS)
    run = load_trained_run(run_dir)
    ids = {k: np.asarray(v) for k, v in run.preprocessor(tf.constant(TEXTS)).items()}
    np.savez(tmp_path / "ids.npz", **{k: v.astype("int32") for k, v in ids.items()})
    script = (
        "import json, sys\n"
        "import numpy as np, tensorflow as tf, tensorflow_text\n"
        "full = tf.saved_model.load(sys.argv[1])\n"
        "texts = tf.constant(json.loads(sys.argv[2]))\n"
        "out = full.signatures['serving_default'](text=texts)\n"
        "ids = {k: tf.constant(v) for k, v in np.load(sys.argv[3]).items()}\n"
        "by_ids = full.signatures['predict_ids'](**ids)\n"
        "np.savez(sys.argv[4], text=out['probabilities'].numpy(),\n"
        "         ids=by_ids['probabilities'].numpy(), label=out['label'].numpy())\n"
        "assert not any(m.startswith(('fnn_keras', 'keras_hub')) for m in sys.modules)\n"
    )
    result = run_python(
        [
            "-c",
            script,
            os.path.join(run_dir, "1"),
            json.dumps(TEXTS),
            str(tmp_path / "ids.npz"),
            str(tmp_path / "out.npz"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(outputs["text"], reference, atol=1e-5)
    np.testing.assert_allclose(outputs["ids"], reference, atol=1e-5)


def test_ids_only_saved_model_without_tensorflow_text(run_dir, tmp_path):
    np.save(tmp_path / "token_ids.npy", np.array([[2, 5, 6, 3]], np.int32))
    np.save(tmp_path / "segment_ids.npy", np.zeros((1, 4), np.int32))
    np.save(tmp_path / "padding_mask.npy", np.ones((1, 4), np.int32))
    inputs = ";".join(f"{name}={tmp_path / name}.npy" for name in savedmodel.INPUT_NAMES)
    # The console script TensorFlow installs beside this interpreter.
    saved_model_cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = run_python(
        [
            saved_model_cli,
            "run",
            "--dir",
            os.path.join(run_dir, "ids_only", "1"),
            "--tag_set",
            "serve",
            "--signature_def",
            "predict_ids",
            "--inputs",
            inputs,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Result for output key probabilities" in result.stdout
    assert "Result for output key label" in result.stdout


def test_warmup_records_parse(run_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(run_dir, "1", "assets.extra", "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert 1 <= len(records) <= 5
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "tiny-run"
        assert request.model_spec.signature_name == "serving_default"
        assert tf.make_ndarray(request.inputs["text"]).shape == (1,)


def test_models_config_names_both_models(run_dir):
    with open(os.path.join(run_dir, "models.config"), encoding="utf-8") as file:
        text = file.read()
    assert 'name: "tiny-run"' in text
    assert 'base_path: "/models/tiny-run/ids_only"' in text


def signature_summary(path):
    loaded = tf.saved_model.load(path)
    summary = {}
    for name, function in loaded.signatures.items():
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        summary[name] = (
            {k: v.dtype.name for k, v in inputs.items()},
            {k: v.dtype.name for k, v in outputs.items()},
        )
    return summary


def test_reexport_keeps_signatures(run_dir, tmp_path):
    copy = str(tmp_path / "copy-run")
    shutil.copytree(run_dir, copy)
    run = load_trained_run(copy)
    path = savedmodel.export_saved_model(run.model, run.preprocessor, run.labels, copy)
    assert os.path.basename(path) == "2"
    assert signature_summary(path) == signature_summary(os.path.join(copy, "1"))
    inputs, outputs = signature_summary(path)["serving_default"]
    assert inputs == {"text": "string"}
    assert outputs == {"probabilities": "float32", "label": "string", "label_id": "int32"}


def test_interrupted_export_leaves_no_version(run_dir, tmp_path, monkeypatch):
    copy = str(tmp_path / "copy-run")
    shutil.copytree(run_dir, copy)
    run = load_trained_run(copy)

    # Crash after the files are written and before the version is renamed
    # into place.
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(savedmodel.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        savedmodel.export_saved_model(run.model, run.preprocessor, run.labels, copy)
    monkeypatch.undo()
    leftovers = sorted(name for name in os.listdir(copy) if name[0] in ".0123456789")
    assert leftovers == ["1"]


def test_predict_same_labels_from_every_artifact(run_dir):
    artifacts = [
        os.path.join(run_dir, "model.keras"),
        os.path.join(run_dir, "1"),
        os.path.join(run_dir, "ids_only", "1"),
        os.path.join(run_dir, "tflite", "model_float32.tflite"),
        os.path.join(run_dir, "onnx", "model.onnx"),
    ]
    results = [load_predictor(path).predict(TEXTS) for path in artifacts]
    for path, probabilities in zip(artifacts[1:], results[1:], strict=True):
        np.testing.assert_allclose(probabilities, results[0], atol=1e-4, err_msg=path)
        np.testing.assert_array_equal(probabilities.argmax(1), results[0].argmax(1))


def test_predict_cli_json_lines(run_dir, capsys):
    predict_cli.main([os.path.join(run_dir, "onnx", "model.onnx"), "good fun", ""])
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["text"] for r in records] == ["good fun", ""]
    for record in records:
        assert record["label"] in ("neg", "pos")
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def run_export_cli(args, capsys):
    with pytest.raises(SystemExit) as raised:
        export_cli.main(args)
    captured = capsys.readouterr()
    return raised.value.code, captured.out, captured.err


def test_export_cli_missing_run(tmp_path, capsys):
    code, _, err = run_export_cli(["nope", "--export-dir", str(tmp_path), "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "Run not found", "'nope'")


def test_export_cli_corrupt_model(run_dir, tmp_path, capsys):
    copy = tmp_path / "broken"
    shutil.copytree(run_dir, copy)
    (copy / "model.keras").write_bytes(b"not a zip file")
    code, _, err = run_export_cli([str(copy), "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "model.keras", "corrupt")


def test_export_cli_keeps_what_succeeded(run_dir, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "partial"
    shutil.copytree(run_dir, copy)
    # The token-id SavedModel cannot be written where a file blocks its
    # directory; a TFLite variant fails in the converter.
    shutil.rmtree(copy / "ids_only")
    (copy / "ids_only").write_text("in the way")
    original = tflite.convert_variant

    def failing_float16(model, path, variant, *args, **kwargs):
        if variant == "float16":
            raise RuntimeError("converter crashed")
        return original(model, path, variant, *args, **kwargs)

    monkeypatch.setattr(tflite, "convert_variant", failing_float16)
    code, out, err = run_export_cli(
        [str(copy), "--tflite-variants", "float32,float16", "--quiet"], capsys
    )
    assert code == 2
    assert_one_line_error(err, "2 export(s) failed", "saved_model", "tflite/float16")
    assert "ok      tflite float32" in out
    assert "ok      onnx opset17" in out
    assert os.path.isfile(copy / "tflite" / "model_float32.tflite")
    assert not os.path.exists(copy / "tflite" / "model_float16.tflite")
    assert glob.glob(str(copy / "onnx" / "model.onnx"))


def test_export_run_rejects_unknown_variant(run_dir):
    run = load_trained_run(run_dir)
    with pytest.raises(exporter.ExportError, match="float8"):
        exporter.export_run(run, ["x"], tflite_variants=("float8",))


@pytest.mark.parametrize(
    "variant, result, missed",
    [
        ("float32", {"max_abs_diff": 5e-5, "top1_agreement": 1.0}, []),
        ("float32", {"max_abs_diff": 2e-4, "top1_agreement": 1.0}, ["max abs diff"]),
        ("float16", {"max_abs_diff": 1e-2, "top1_agreement": 0.985}, ["top-1 agreement"]),
        ("full_int8", {"max_abs_diff": 0.1, "top1_agreement": 0.975}, []),
        (
            "dynamic_int8",
            {
                "max_abs_diff": 0.1,
                "top1_agreement": 0.995,
                "accuracy": 0.84,
                "keras_accuracy": 0.86,
            },
            ["accuracy drop"],
        ),
    ],
    ids=["float32_ok", "float32_diff", "float16_agreement", "full_int8_ok", "accuracy_drop"],
)
def test_tflite_bar_check(variant, result, missed):
    misses = exporter.check_bar(variant, result)
    assert [m.split(" ")[0:2] for m in misses] == [m.split(" ")[0:2] for m in missed]


def test_saved_model_cli_runs_text_signature(run_dir, tmp_path):
    # saved_model_cli cannot import TF Text itself; register its ops first,
    # as a TF Serving build with TF Text does.
    script = (
        "import sys\n"
        "import tensorflow_text\n"
        "from tensorflow.python.tools import saved_model_cli\n"
        "sys.argv = ['saved_model_cli'] + sys.argv[1:]\n"
        "saved_model_cli.main()\n"
    )
    result = run_python(
        [
            "-c",
            script,
            "run",
            "--dir",
            os.path.join(run_dir, "1"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--input_exprs",
            'text=["a good film", "很好"]',
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Result for output key probabilities" in result.stdout
    assert "Result for output key label" in result.stdout


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_unrolled_rebuild_matches_and_has_no_loop(tiny_bundle, pooling):
    from fnn_keras.data.pipeline import build_preprocessor
    from fnn_keras.models.classifier import INPUT_NAMES, build_classifier

    model = build_classifier(tiny_bundle.backbone, num_labels=3, pooling=pooling)
    unrolled = tflite.rebuild_unrolled(model)
    preprocessor = build_preprocessor(tiny_bundle.tokenizer, 16)
    features = {k: tf.cast(v, tf.int32) for k, v in preprocessor(tf.constant(TEXTS)).items()}
    static = tf.function(
        lambda inputs: unrolled(inputs, training=False),
        input_signature=[{name: tf.TensorSpec([len(TEXTS), 16], tf.int32) for name in INPUT_NAMES}],
    )
    np.testing.assert_allclose(static(features), model(features), atol=1e-6)
    ops = {op.type for op in static.get_concrete_function().graph.get_operations()}
    assert not ops & {"While", "StatelessWhile"}
    # A dynamic length still traces, with the loop.
    dynamic = tf.function(
        lambda inputs: unrolled(inputs, training=False),
        input_signature=[{name: tf.TensorSpec([None, None], tf.int32) for name in INPUT_NAMES}],
    )
    np.testing.assert_allclose(dynamic(features), model(features), atol=1e-6)


def test_signature_lengths_and_fitting():
    assert tflite.signature_lengths(128) == [16, 32, 64, 128]
    assert tflite.signature_lengths(100) == [16, 32, 64, 100]
    assert tflite.signature_lengths(16) == [16]
    assert tflite.signature_lengths(8) == [8]
    mask = np.zeros((1, 128), np.int32)
    mask[0, :17] = 1
    features = {"token_ids": mask * 7, "segment_ids": mask * 0, "padding_mask": mask}
    fitted = tflite.fit_to_signature(features, [16, 32, 64, 128])
    assert {name: value.shape for name, value in fitted.items()} == {
        "token_ids": (1, 32),
        "segment_ids": (1, 32),
        "padding_mask": (1, 32),
    }
    assert fitted["padding_mask"].sum() == 17
    # Features shorter than the signature are padded with zeros.
    short = {name: value[:, :20] for name, value in features.items()}
    assert tflite.fit_to_signature(short, [16, 32])["token_ids"].shape == (1, 32)


def test_tflite_runs_each_text_at_its_signature_length(run_dir):
    texts = ["good", "a " + "fine and moving film " * 6, "bad " * 200]
    path = os.path.join(run_dir, "tflite", "model_float32.tflite")
    predictor = load_predictor(path)
    runner = predictor.runner
    assert runner.lengths == [16, 32, 64, 128]
    features = predictor.features(texts)
    used = [
        tflite.fit_to_signature({k: v[i : i + 1] for k, v in features.items()}, runner.lengths)[
            "token_ids"
        ].shape[1]
        for i in range(len(texts))
    ]
    real = features["padding_mask"].sum(axis=1)
    assert used == [min(n for n in runner.lengths if n >= r) for r in real]
    assert used[0] == 16
    assert used[-1] == 128
    assert len(set(used)) == 3
    reference = load_predictor(os.path.join(run_dir, "model.keras")).predict(texts)
    np.testing.assert_allclose(predictor.predict(texts), reference, atol=1e-4)


def test_predict_rejects_corrupt_onnx(run_dir, tmp_path):
    from fnn_keras.export.predictors import PredictorError

    for name in ("vocab.txt", "tokenizer.json", "labels.json"):
        shutil.copy(os.path.join(run_dir, "onnx", name), tmp_path / name)
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(PredictorError, match="not a valid ONNX model"):
        load_predictor(str(tmp_path / "model.onnx"))


def test_predict_cli_counts_truncated_texts(run_dir, capsys, caplog):
    long_text = "good fun " * 200
    predict_cli.main([os.path.join(run_dir, "model.keras"), long_text, "short"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert "1 of 2 texts are longer than 128 tokens" in caplog.text


def test_export_cli_no_formats(run_dir, capsys):
    code, _, err = run_export_cli([run_dir, "--formats", "", "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "No export format")


def test_predict_sorts_batches_keeps_order(run_dir):
    texts = ["a long and winding review of a very good film", "bad", "很好", "fine film"] * 3
    for artifact in ("model.keras", "onnx/model.onnx"):
        predictor = load_predictor(os.path.join(run_dir, artifact))
        one_batch = predictor.predict(texts, batch_size=len(texts))
        np.testing.assert_allclose(predictor.predict(texts, batch_size=2), one_batch, atol=1e-5)
        singles = np.concatenate([predictor.predict([text]) for text in texts[:4]])
        np.testing.assert_allclose(one_batch[:4], singles, atol=1e-5)
