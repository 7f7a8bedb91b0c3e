"""The feedback RNN layer: `FeedbackCell` run over a masked sequence."""

import keras
import tensorflow as tf

from fnn_keras.layers.feedback_cell import FeedbackCell


@keras.saving.register_keras_serializable(package="fnn_keras")
class FeedbackLayer(keras.layers.RNN):
    """Feedback RNN over a padded sequence, with the input projection hoisted.

    The layer runs a `FeedbackCell` over the time axis. Two things make it
    faster than `keras.layers.RNN(FeedbackCell(...))` while computing the same
    values:

    - `x·W + b` is computed for all time steps in one matrix product before
      the loop, so each loop step carries only the recurrent work.
    - Without `unroll`, the loop covers only the time steps where at least one
      sequence of the batch has a real token, so trailing padding costs
      nothing.

    Padded positions (where `mask` is false) never change the state `u`. The
    last output is the hidden state `h` of each sequence's last real token.
    With `return_sequences=True`, padded positions output zeros. The layer
    works inside `keras.layers.Bidirectional`.

    The loop is written with TensorFlow ops, so the layer needs the TensorFlow
    backend.

    Args:
        units: int. Width of the hidden output and of the feedback state.
        feedback_steps: int. Feedback iterations per time step. Defaults to
            `1`.
        activation: Activation for `h`. Defaults to `"relu"`.
        feedback_activation: Activation for `u`. Defaults to `"sigmoid"`.
        use_bias: bool. Defaults to `True`.
        kernel_initializer: Initializer for `W`. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `U`. Defaults to
            `"orthogonal"`.
        feedback_initializer: Initializer for `V`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: Initializer for the biases. Defaults to `"zeros"`.
        dropout: float in [0, 1). Input dropout rate. Defaults to `0.0`.
        recurrent_dropout: float in [0, 1). State dropout rate. Defaults to
            `0.0`.
        seed: int. Seed for the dropout masks. Defaults to `None`.
        return_sequences: bool. Return the output of every step instead of the
            last one. Defaults to `False`.
        return_state: bool. Also return the final state `u`. Defaults to
            `False`.
        go_backwards: bool. Process the sequence in reverse. Defaults to
            `False`.
        unroll: bool. Unroll the loop into a static graph wherever the
            sequence length is static at trace time; a dynamic length still
            runs the loop. The unrolled form runs every step and converts
            to TFLite builtin ops. Defaults to `False`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        sequences: Tensor of shape `(batch, time, features)`.
        initial_state: Optional list with the initial `u`, `(batch, units)`.
            Defaults to zeros.
        mask: Optional tensor of shape `(batch, time)`, bool or integer, true
            or nonzero at real tokens.
        training: bool. Whether dropout is applied.

    Returns:
        `(batch, units)`, or `(batch, time, units)` with
        `return_sequences=True`; followed by the final state when
        `return_state=True`.

    Example:

    ```python
    layer = FeedbackLayer(8, feedback_steps=2)
    x = np.random.rand(2, 5, 16).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "int32")
    y = layer(x, mask=mask)  # shape (2, 8)
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
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        unroll=False,
        **kwargs,
    ):
        cell = FeedbackCell(
            units,
            feedback_steps=feedback_steps,
            activation=activation,
            feedback_activation=feedback_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            feedback_initializer=feedback_initializer,
            bias_initializer=bias_initializer,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="feedback_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            unroll=unroll,
            zero_output_for_mask=True,
            **kwargs,
        )
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if mask is not None:
            mask = tf.cast(mask, tf.bool)
        if self.unroll and sequences.shape[1] is None:
            # A time dimension unknown at trace time cannot be unrolled. Keras's
            # symbolic build and signatures with a dynamic length trace the
            # loop instead, and traces with a static length unroll.
            self.unroll = False
            try:
                return super().call(
                    sequences, initial_state=initial_state, mask=mask, training=training
                )
            finally:
                self.unroll = True
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def _maybe_config_dropout_masks(self, cell, input_sequence, input_state):
        # `RNN.call` draws dropout masks on every call, inference included,
        # which puts random ops and seed updates into exported graphs.
        # `inner_loop` draws them itself, and only when training.
        pass

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        state = initial_state[0]

        # One dropout mask per sequence, shared by all time steps; `RNN.call`
        # clears the cached masks after the loop.
        input_mask = None
        recurrent_mask = None
        if training and cell.dropout > 0:
            input_mask = cell.get_dropout_mask(sequences[:, 0, :])[:, None, :]
        if training and cell.recurrent_dropout > 0:
            recurrent_mask = cell.get_recurrent_dropout_mask(state)

        projected = cell.project_inputs(sequences, input_mask)  # (B, T, units)
        projected = tf.transpose(projected, [1, 0, 2])  # (T, B, units)
        if mask is not None:
            mask = tf.transpose(mask, [1, 0])  # (T, B)
        if self.go_backwards:
            projected = tf.reverse(projected, [0])
            if mask is not None:
                mask = tf.reverse(mask, [0])

        if self.unroll:
            return self._unrolled_loop(projected, mask, state, recurrent_mask)
        return self._while_loop(projected, mask, state, recurrent_mask)

    def _masked_step(self, projected_t, mask_t, state, last_output, rm):
        output, new_state = self.cell.step_from_projection(projected_t, state, rm)
        if mask_t is None:
            return output, new_state, output
        keep = mask_t[:, None]
        new_state = tf.where(keep, new_state, state)
        last_output = tf.where(keep, output, last_output)
        output = tf.where(keep, output, tf.zeros_like(output))
        return output, new_state, last_output

    def _unrolled_loop(self, projected, mask, state, recurrent_mask):
        last_output = tf.zeros_like(state)
        outputs = []
        for t in range(projected.shape[0]):
            mask_t = None if mask is None else mask[t]
            output, state, last_output = self._masked_step(
                projected[t], mask_t, state, last_output, recurrent_mask
            )
            outputs.append(output)
        if self.return_sequences:
            outputs = tf.stack(outputs, axis=1)  # (B, T, units)
        else:
            outputs = last_output
        return last_output, outputs, [state]

    def _while_loop(self, projected, mask, state, recurrent_mask):
        num_steps = tf.shape(projected)[0]
        start = tf.constant(0)
        end = num_steps
        if mask is not None:
            # Run only from the first to the last step that has a real token
            # in some sequence; steps outside that range are padding for the
            # whole batch and would leave every state unchanged.
            any_real = tf.reduce_any(mask, axis=1)
            positions = tf.range(num_steps)
            start = tf.reduce_min(tf.where(any_real, positions, num_steps))
            end = tf.reduce_max(tf.where(any_real, positions + 1, 0))
            # Keep at least one step: a batch with no real token (such as a
            # replica's empty share of a final batch) then runs one step
            # that changes nothing, where an empty loop could not stack its
            # outputs.
            start = tf.maximum(tf.minimum(start, num_steps - 1), 0)
            end = tf.maximum(end, tf.minimum(start + 1, num_steps))
            projected = projected[start:end]
            mask = mask[start:end]
        loop_length = end - start

        # Everything a step reads but does not change is prepared once
        # here: the per-step inputs as a TensorArray (reading one element
        # has a cheap gradient, where slicing the full tensor makes a
        # full-size gradient on every step), the mask with its unit axis,
        # and the weights as tensors. Every op in the loop body runs once
        # per token, forward and backward, so the body keeps only the
        # recurrence and the state's masking.
        cell = self.cell
        inputs = tf.TensorArray(projected.dtype, size=loop_length, element_shape=state.shape)
        inputs = inputs.unstack(projected)
        keep = None if mask is None else mask[:, :, None]  # (steps, B, 1)
        zeros = tf.zeros_like(state)
        weights = tuple(
            None if weight is None else tf.convert_to_tensor(weight)
            for weight in cell.recurrent_weights()
        )

        def step(t, state):
            output, new_state = cell.iterate(inputs.read(t), state, recurrent_mask, weights)
            if keep is not None:
                new_state = tf.where(keep[t], new_state, state)
            return output, new_state

        # The TensorArray of per-step outputs is a loop variable only when
        # it is returned: tf2onnx 1.17 cannot convert a loop that carries an
        # unused one. Likewise the last real output only without it.
        if self.return_sequences:
            outputs = tf.TensorArray(projected.dtype, size=loop_length, element_shape=state.shape)

            def body(t, state, outputs):
                output, state = step(t, state)
                return t + 1, state, outputs.write(t, output)

            loop_vars = (tf.constant(0), state, outputs)
        else:

            def body(t, state, last_output):
                output, new_state = step(t, state)
                if keep is not None:
                    # Keep the output of each sequence's last real token.
                    output = tf.where(keep[t], output, last_output)
                return t + 1, new_state, output

            loop_vars = (tf.constant(0), state, zeros)

        results = tf.while_loop(
            lambda t, *_: t < loop_length,
            body,
            loop_vars,
            maximum_iterations=loop_length,
        )
        state = results[1]

        if self.return_sequences:
            outputs = results[2].stack()  # (steps, B, units)
            if keep is not None:
                # Padded positions output zeros, set here for all steps at
                # once rather than inside the loop.
                outputs = tf.where(keep, outputs, tf.zeros_like(outputs))
            # Keras's RNN returns the last output only without
            # `return_sequences`; here it is the last step's output.
            last_output = outputs[-1]
            outputs = tf.pad(outputs, [[start, num_steps - end], [0, 0], [0, 0]])
            outputs = tf.transpose(outputs, [1, 0, 2])  # (B, T, units)
        else:
            last_output = results[2]
            outputs = last_output
        return last_output, outputs, [state]

    def get_config(self):
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        base_config = super().get_config()
        for key in ("cell", "zero_output_for_mask", "stateful"):
            base_config.pop(key, None)
        return {**base_config, **cell_config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
