"""The arithmetic behind the benchmark tables: FLOP counts, medians, target checks."""

import pytest

from benchmarks.common import Protocol, training_flops
from benchmarks.run import acceptance, training_metrics

SHAPE = {"layers": 2, "hidden": 4, "intermediate": 8}


def test_training_flops_counts_dense_and_attention_products():
    # Per token and layer: 3 * 2 * (4*16 + 2*4*8) = 768; per text of n
    # tokens and layer: 3 * 4 * n^2 * 4 = 48 n^2.
    assert training_flops(SHAPE, [1]) == 2 * (768 + 48)
    assert training_flops(SHAPE, [3, 1]) == 2 * (768 * 4 + 48 * (9 + 1))


def test_training_metrics_take_the_median_repeat():
    protocol = Protocol(warmup_steps=1, steps_per_repeat=2, repeats=3)
    # Step ends: warm-up ends at 10 s; repeats take 2 s, 4 s and 1 s.
    result = {
        "step_ends": [10, 11, 12, 14, 16, 16.5, 17],
        "real_lengths": [[1, 1]] * 7,
        "padded_lengths": [2] * 7,
    }
    metrics = training_metrics(result, protocol, SHAPE, ceiling=1.0)
    assert [r["seconds"] for r in metrics["repeats"]] == [2, 4, 1]
    # Each repeat trains 4 examples of 1 real token each.
    assert metrics["examples_per_s"] == pytest.approx(2.0)
    assert metrics["step_ms"] == pytest.approx(1000.0)
    assert metrics["padded_per_real_token"] == pytest.approx(2.0)
    assert metrics["useful_fraction_of_ceiling"] == pytest.approx(metrics["useful_gflops"] / 1.0)


def test_acceptance_flags_each_target():
    def row(examples, step_ms):
        return {"metrics": {"examples_per_s": examples, "step_ms": step_ms}}

    training = {
        "fnn_keras": row(40.0, 115.0),
        "torch_128": row(10.0, 1.0),
        "keras_hub_128": row(14.0, 1.0),
        "fnn_keras_pooled": row(1.0, 100.0),
    }
    latency = {
        "rows": {
            "keras_predict": {"one_text": {"p50_ms": 30.0}},
            "onnx": {"one_text": {"p50_ms": 10.0}},
            "tflite_float32": {"one_text": {"p50_ms": 10.1}},
            "tflite_dynamic_int8": {"one_text": {"p50_ms": 5.0}},
        }
    }
    verdicts = {check["check"]: check["passed"] for check in acceptance(training, latency)}
    assert verdicts == {
        "fnn_keras examples/s vs torch_128": True,  # 4.0x
        "fnn_keras examples/s vs keras_hub_128": False,  # 2.86x
        "feedback head step time over the pooled head": True,  # +15%
        "onnx p50 for one text vs Keras model.predict": True,
        "tflite_float32 p50 for one text vs Keras model.predict": False,
        "tflite_dynamic_int8 p50 for one text vs Keras model.predict": True,
    }
    # A row that did not run is not checked.
    assert len(acceptance({"fnn_keras": training["fnn_keras"]}, None)) == 0
