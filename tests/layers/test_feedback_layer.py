import keras
import numpy as np

from fnn_keras.layers import FeedbackCell, FeedbackLayer


def random_inputs(seed=0, batch=3, time=6, features=5):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, time, features)).astype("float32")
    mask = np.zeros((batch, time), "int32")
    for row, length in enumerate([3, time, 1][:batch]):
        mask[row, :length] = 1
    return x, mask


def test_layer_matches_keras_rnn_over_cell():
    x, mask = random_inputs()
    layer = FeedbackLayer(4, feedback_steps=2, bias_initializer="random_normal")
    expected = layer(x, mask=mask)
    reference = keras.layers.RNN(layer.cell)(x, mask=mask.astype(bool))
    np.testing.assert_allclose(expected, reference, atol=1e-6)


def test_layer_padding_never_changes_state():
    x, mask = random_inputs()
    layer = FeedbackLayer(4, feedback_steps=3, return_state=True)
    output, state = layer(x, mask=mask)

    # The same sequences, each run alone over its real tokens only.
    for row, length in enumerate(mask.sum(axis=1)):
        alone_output, alone_state = layer(x[row : row + 1, :length])
        np.testing.assert_allclose(output[row], alone_output[0], atol=1e-6)
        np.testing.assert_allclose(state[row], alone_state[0], atol=1e-6)

    # Garbage at padded positions changes nothing.
    noisy = np.where(mask[..., None] == 1, x, 100.0).astype("float32")
    noisy_output, noisy_state = layer(noisy, mask=mask)
    np.testing.assert_allclose(noisy_output, output, atol=1e-6)
    np.testing.assert_allclose(noisy_state, state, atol=1e-6)


def test_layer_same_output_for_longer_padding():
    x, mask = random_inputs(time=6)
    layer = FeedbackLayer(4, feedback_steps=2)
    short = layer(x, mask=mask)
    padded_x = np.pad(x, [(0, 0), (0, 10), (0, 0)], constant_values=7.0)
    padded_mask = np.pad(mask, [(0, 0), (0, 10)])
    np.testing.assert_allclose(layer(padded_x, mask=padded_mask), short, atol=1e-6)


def test_layer_return_sequences_zero_at_padding():
    x, mask = random_inputs()
    layer = FeedbackLayer(4, return_sequences=True, bias_initializer="ones")
    outputs = layer(x, mask=mask)
    assert outputs.shape == (3, 6, 4)
    np.testing.assert_array_equal(np.asarray(outputs)[mask == 0], 0.0)
    last = FeedbackLayer.from_config({**layer.get_config(), "return_sequences": False})
    last.build(x.shape)
    last.set_weights(layer.get_weights())
    final = last(x, mask=mask)
    lengths = mask.sum(axis=1)
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(outputs[row, length - 1], final[row], atol=1e-6)


def test_bidirectional_padding_invariance():
    x, mask = random_inputs()
    layer = keras.layers.Bidirectional(FeedbackLayer(4, feedback_steps=2, return_sequences=True))
    outputs = np.asarray(layer(x, mask=mask))
    padded_x = np.pad(x, [(0, 0), (0, 5), (0, 0)], constant_values=-3.0)
    padded_mask = np.pad(mask, [(0, 0), (0, 5)])
    padded_outputs = np.asarray(layer(padded_x, mask=padded_mask))
    np.testing.assert_allclose(padded_outputs[:, :6], outputs, atol=1e-6)
    np.testing.assert_array_equal(padded_outputs[:, 6:], 0.0)

    # The backward half at each sequence's first token equals a backward run
    # over that sequence's real tokens alone.
    backward = layer.backward_layer
    for row, length in enumerate(mask.sum(axis=1)):
        alone = backward(x[row : row + 1, :length])
        np.testing.assert_allclose(outputs[row, 0, 4:], alone[0, -1], atol=1e-6)


def test_unrolled_layer_equals_loop():
    x, mask = random_inputs()
    loop = FeedbackLayer(4, feedback_steps=2, return_sequences=True)
    expected = loop(x, mask=mask)
    unrolled = FeedbackLayer.from_config({**loop.get_config(), "unroll": True})
    unrolled.build(x.shape)
    unrolled.set_weights(loop.get_weights())
    np.testing.assert_allclose(unrolled(x, mask=mask), expected, atol=1e-6)


def test_layer_config_round_trip():
    layer = FeedbackLayer(
        6,
        feedback_steps=3,
        activation="tanh",
        dropout=0.25,
        recurrent_dropout=0.1,
        return_sequences=True,
        go_backwards=True,
        seed=5,
        name="fb",
    )
    config = layer.get_config()
    restored = FeedbackLayer.from_config(config)
    assert restored.get_config() == config
    assert isinstance(restored.cell, FeedbackCell)
    assert restored.cell.feedback_steps == 3
    assert restored.go_backwards


def test_layer_trains_under_fit():
    keras.utils.set_random_seed(0)
    x, mask = random_inputs(batch=3)
    inputs = keras.Input((None, 5))
    mask_input = keras.Input((None,), dtype="int32")
    features = FeedbackLayer(4, dropout=0.1, recurrent_dropout=0.1)(inputs, mask=mask_input)
    model = keras.Model([inputs, mask_input], keras.layers.Dense(1)(features))
    model.compile("adam", "mse")
    before = [w.copy() for w in model.get_weights()]
    model.fit([x, mask], np.ones((3, 1)), epochs=2, verbose=0)
    changed = [not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True)]
    assert all(changed)


def test_layer_dropout_only_in_training():
    keras.utils.set_random_seed(0)
    x, mask = random_inputs()
    layer = FeedbackLayer(4, dropout=0.5, recurrent_dropout=0.5, bias_initializer="ones")
    inference = layer(x, mask=mask, training=False)
    np.testing.assert_array_equal(layer(x, mask=mask, training=False), inference)
    assert not np.allclose(layer(x, mask=mask, training=True), inference)
