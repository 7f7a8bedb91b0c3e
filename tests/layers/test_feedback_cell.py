import keras
import numpy as np
import pytest

from fnn_keras.layers import FeedbackCell


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_feedback_rnn(x, weights, feedback_steps):
    """The feedback equations over a whole sequence, in NumPy."""
    kernel, recurrent_kernel, feedback_kernel, bias, feedback_bias = weights
    batch, time, _ = x.shape
    u = np.zeros((batch, kernel.shape[1]))
    for t in range(time):
        for _ in range(feedback_steps):
            h = np.maximum(x[:, t] @ kernel + u @ recurrent_kernel + bias, 0.0)
            u = sigmoid(h @ feedback_kernel + feedback_bias)
    return h, u


@pytest.mark.parametrize("feedback_steps", [1, 3], ids=["steps1", "steps3"])
def test_cell_matches_numpy(feedback_steps):
    keras.utils.set_random_seed(3)
    x = np.random.uniform(-1, 1, (2, 4, 3)).astype("float32")
    cell = FeedbackCell(5, feedback_steps=feedback_steps, bias_initializer="random_normal")
    rnn = keras.layers.RNN(cell, return_state=True)
    output, state = rnn(x)

    expected_h, expected_u = numpy_feedback_rnn(
        x.astype("float64"),
        [w.numpy().astype("float64") for w in cell.weights],
        feedback_steps,
    )
    np.testing.assert_allclose(output, expected_h, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(state, expected_u, atol=1e-5, rtol=1e-5)


def test_cell_weights_and_sizes():
    cell = FeedbackCell(4)
    cell.build((None, 3))
    assert [w.name for w in cell.weights] == [
        "kernel",
        "recurrent_kernel",
        "feedback_kernel",
        "bias",
        "feedback_bias",
    ]
    assert cell.state_size == 4
    assert cell.output_size == 4
    assert cell.kernel.shape == (3, 4)


def test_cell_steps_change_output():
    keras.utils.set_random_seed(0)
    x = np.random.rand(2, 3, 3).astype("float32")
    one = FeedbackCell(4, feedback_steps=1, bias_initializer="ones")
    three = FeedbackCell(4, feedback_steps=3, bias_initializer="ones")
    out_one = keras.layers.RNN(one)(x)
    three.build((None, 3))
    three.set_weights(one.get_weights())
    out_three = keras.layers.RNN(three)(x)
    assert not np.allclose(out_one, out_three)


def test_cell_config_round_trip():
    cell = FeedbackCell(
        7,
        feedback_steps=3,
        activation="tanh",
        feedback_activation="hard_sigmoid",
        use_bias=False,
        kernel_initializer="he_normal",
        dropout=0.2,
        recurrent_dropout=0.3,
        seed=11,
        name="my_cell",
    )
    config = cell.get_config()
    restored = FeedbackCell.from_config(config)
    assert restored.get_config() == config
    assert restored.units == 7
    assert restored.feedback_steps == 3
    assert restored.dropout == 0.2
    assert restored.recurrent_dropout == 0.3
    assert config["activation"] == "tanh"


def test_cell_serializes_by_registered_name():
    cell = FeedbackCell(3, feedback_steps=2)
    serialized = keras.saving.serialize_keras_object(cell)
    assert serialized["registered_name"] == "fnn_keras>FeedbackCell"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(restored, FeedbackCell)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": 0}, "units=0"),
        ({"units": -3}, "units=-3"),
        ({"units": 2.5}, "units=2.5"),
        ({"units": 4, "feedback_steps": 0}, "feedback_steps=0"),
        ({"units": 4, "dropout": 1.0}, "dropout=1.0"),
        ({"units": 4, "dropout": -0.1}, "dropout=-0.1"),
        ({"units": 4, "recurrent_dropout": 1.5}, "recurrent_dropout=1.5"),
    ],
    ids=[
        "units0",
        "units_negative",
        "units_float",
        "steps0",
        "dropout1",
        "dropout_negative",
        "recurrent_dropout",
    ],
)
def test_cell_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeedbackCell(**kwargs)


def test_cell_dropout_applies_only_in_training():
    keras.utils.set_random_seed(0)
    x = np.ones((4, 3, 6), "float32")
    rnn = keras.layers.RNN(FeedbackCell(5, dropout=0.5, recurrent_dropout=0.5))
    inference = rnn(x, training=False)
    np.testing.assert_allclose(inference, rnn(x, training=False))
    assert not np.allclose(rnn(x, training=True), inference)
