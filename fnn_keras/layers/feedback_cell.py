"""The feedback RNN cell: one time step of the feedback equations."""

import keras
from keras import ops

# NOTE: `DropoutRNNCell` is not exported under `keras.layers` (Keras 3.15), but
# `keras.layers.RNN` only prepares per-sequence dropout masks for cells that
# inherit from it, so we import it from its internal module.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell


def _bias_add(x, bias):
    # TensorFlow's BiasAdd, unlike a broadcast add, lets its graph optimizer
    # fuse the preceding MatMul and the bias into one kernel.
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(x, bias)
    return x + bias


def _check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value!r}. "
            "Pass a dropout rate such as 0.1, or 0 to turn it off."
        )


@keras.saving.register_keras_serializable(package="fnn_keras")
class FeedbackCell(keras.layers.Layer, DropoutRNNCell):
    """Cell for the feedback RNN, processing one step of a sequence.

    At each time step the cell reads the input `x` and its carried feedback
    state `u`, then iterates `feedback_steps` times:

    ```
    h = activation(x·W + u·U + b)
    u = feedback_activation(h·V + c)
    ```

    The step outputs the last `h` and carries the last `u` to the next step.
    With `feedback_steps=1` it is an Elman-style RNN whose recurrent signal is
    squashed through its own dense layer; more steps let the hidden state and
    the feedback settle against each other before the next token.

    Use it inside `keras.layers.RNN`, or use `FeedbackLayer`, which computes
    `x·W` for all time steps in one matrix product before the loop.

    Args:
        units: int. Width of the hidden output `h` and of the state `u`.
        feedback_steps: int. How many times `h` and `u` are updated per time
            step. Defaults to `1`.
        activation: Activation `f` for `h`. Defaults to `"relu"`.
        feedback_activation: Activation `φ` for `u`. Defaults to `"sigmoid"`,
            which keeps the state in (0, 1).
        use_bias: bool. Whether to add `b` and `c`. Defaults to `True`.
        kernel_initializer: Initializer for `W`. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `U`. Defaults to
            `"orthogonal"`.
        feedback_initializer: Initializer for `V`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: Initializer for `b` and `c`. Defaults to `"zeros"`.
        dropout: float in [0, 1). Fraction of the input units dropped, with
            one mask per sequence. Defaults to `0.0`.
        recurrent_dropout: float in [0, 1). Fraction of the state units
            dropped before `u·U`, with one mask per sequence. Defaults to
            `0.0`.
        seed: int. Seed for the dropout masks. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Tensor of shape `(batch, input_dim)`, one time step.
        states: List holding the state tensor `u`, `(batch, units)`.
        training: bool. Whether dropout is applied.

    Returns:
        A tuple `(h, [u])` with both tensors of shape `(batch, units)`.

    Example:

    ```python
    cell = FeedbackCell(4, feedback_steps=2)
    rnn = keras.layers.RNN(cell)
    outputs = rnn(np.ones((2, 3, 5), "float32"))  # shape (2, 4)
    ```
    """

    def __init__(
        self,
        units,
        feedback_steps=1,
        activation="relu",
        feedback_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        feedback_initializer="glorot_uniform",
        bias_initializer="zeros",
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(
                "`units` must be a positive integer. "
                f"Received: units={units!r}. Pass the width of the state."
            )
        if (
            isinstance(feedback_steps, bool)
            or not isinstance(feedback_steps, int)
            or feedback_steps < 1
        ):
            raise ValueError(
                "`feedback_steps` must be an integer >= 1. "
                f"Received: feedback_steps={feedback_steps!r}."
            )
        _check_rate("dropout", dropout)
        _check_rate("recurrent_dropout", recurrent_dropout)
        super().__init__(**kwargs)

        self.units = units
        self.feedback_steps = feedback_steps
        self.activation = keras.activations.get(activation)
        self.feedback_activation = keras.activations.get(feedback_activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.feedback_initializer = keras.initializers.get(feedback_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        self.feedback_kernel = self.add_weight(
            shape=(self.units, self.units),
            initializer=self.feedback_initializer,
            name="feedback_kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                name="bias",
            )
            self.feedback_bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                name="feedback_bias",
            )
        else:
            self.bias = None
            self.feedback_bias = None

    def project_inputs(self, inputs, dropout_mask=None):
        """Compute `x·W + b` for inputs of any rank, applying dropout.

        Args:
            inputs: Tensor of shape `(..., input_dim)`.
            dropout_mask: Optional tensor that multiplies `inputs`, such as
                the result of `get_dropout_mask`, broadcast over time.

        Returns:
            Tensor of shape `(..., units)`.
        """
        if dropout_mask is not None:
            inputs = inputs * dropout_mask
        projected = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            projected = projected + self.bias
        return projected

    def step_from_projection(self, projected, state, recurrent_mask=None):
        """Run the feedback iterations for one time step.

        Args:
            projected: Tensor `x·W + b` of shape `(batch, units)`.
            state: The carried state `u`, `(batch, units)`.
            recurrent_mask: Optional dropout mask multiplied onto `u` before
                each `u·U`.

        Returns:
            A tuple `(h, u)`, both `(batch, units)`.
        """
        return self.iterate(projected, state, recurrent_mask, self.recurrent_weights())

    def recurrent_weights(self):
        """Return `(U, V, c)`, the weights each step uses (`c` is `None` without bias).

        A loop reads them once and passes them to `iterate` on every step,
        instead of reading each variable on every step.
        """
        return self.recurrent_kernel, self.feedback_kernel, self.feedback_bias

    def iterate(self, projected, state, recurrent_mask, weights):
        """`step_from_projection` with the weights given as `(U, V, c)`.

        Args:
            projected: Tensor `x·W + b` of shape `(batch, units)`.
            state: The carried state `u`, `(batch, units)`.
            recurrent_mask: Optional dropout mask for `u`.
            weights: The output of `recurrent_weights`, or tensors read from
                it.

        Returns:
            A tuple `(h, u)`, both `(batch, units)`.
        """
        recurrent_kernel, feedback_kernel, feedback_bias = weights
        feedback = state
        hidden = None
        for _ in range(self.feedback_steps):
            if recurrent_mask is not None:
                feedback = feedback * recurrent_mask
            hidden = self.activation(projected + ops.matmul(feedback, recurrent_kernel))
            feedback = ops.matmul(hidden, feedback_kernel)
            if feedback_bias is not None:
                feedback = _bias_add(feedback, feedback_bias)
            feedback = self.feedback_activation(feedback)
        return hidden, feedback

    def call(self, inputs, states, training=False):
        state = states[0] if isinstance(states, (list, tuple)) else states
        dropout_mask = None
        recurrent_mask = None
        if training and self.dropout > 0:
            dropout_mask = self.get_dropout_mask(inputs)
        if training and self.recurrent_dropout > 0:
            recurrent_mask = self.get_recurrent_dropout_mask(state)

        projected = self.project_inputs(inputs, dropout_mask)
        hidden, feedback = self.step_from_projection(projected, state, recurrent_mask)
        return hidden, [feedback]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    def get_config(self):
        config = {
            "units": self.units,
            "feedback_steps": self.feedback_steps,
            "activation": keras.activations.serialize(self.activation),
            "feedback_activation": keras.activations.serialize(self.feedback_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "feedback_initializer": keras.initializers.serialize(self.feedback_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        base_config = super().get_config()
        return {**base_config, **config}
