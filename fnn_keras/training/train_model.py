"""The model that `fit` trains: exact losses on any number of replicas."""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf
from keras.src.trainers import data_adapters

from fnn_keras.models.classifier import classifier_from_config
from fnn_keras.training.adversarial import EmbeddingPerturbation, fgm_perturbation
from fnn_keras.training.losses import build_loss
from fnn_keras.training.optimization import build_optimizer, learning_rate_multipliers
from fnn_keras.training.strategy import is_multi_worker


class TrainingModel(keras.Model):
    """Wrap a classifier for `fit` under any `tf.distribute` strategy.

    The wrapped model is what gets saved and exported; this wrapper only
    changes how a step computes its loss, gradients and logs:

    - The loss of a step is the mean over the global batch. Each replica sums
      its examples' losses and divides by the example count of all replicas,
      so a final batch split unevenly (or leaving a replica empty) weighs
      every example the same, and 1 or N replicas give the same gradients.
      Keras's default divides each replica's mean by the replica count, which
      is exact only for even splits.
    - With `jit_compile=True` the forward and backward pass of each replica
      is compiled with XLA. Keras's own `jit_compile` compiles the whole
      multi-replica step on one device, which fails under `MirroredStrategy`
      with 2+ devices ("Trying to access resource ... located in device
      CPU:1"), and its `"auto"` setting turns XLA off under `tf.distribute`.
    - Two small workarounds let `fit` run under
      `MultiWorkerMirroredStrategy` (Keras 3.15); see `_maybe_symbolic_build`
      and `_logs_for_reduction`.

    Args:
        model: The classifier, built under the same strategy scope.
        loss: A Keras loss with `reduction=None`, applied per example.
        jit_compile: Compile each replica's forward and backward pass with
            XLA.
        class_weights: Loss weight of each class id, or `None` for none.
            A training example's loss is multiplied by its class's weight
            and the sum is still divided by the example count, as Keras's
            `class_weight` does. Dev losses and all metrics are unweighted.
        clip_norm: Clip the gradient to this global norm before each
            update, or `None`. The norm is taken over the gradient summed
            over replicas, so 1 and N replicas clip alike. The logged
            `gradient_norm` is the norm before clipping.
        adversarial_embedding: The backbone's token embedding layer, to
            train with the fast gradient method (FGM), or `None`. Each step
            then also computes the loss with every example's embedding
            output moved by `adversarial_epsilon` along its gradient, and
            the gradients of both losses are added. The logs gain
            `adversarial_loss`, the mean loss under the perturbation.
        adversarial_epsilon: L2 norm of each example's FGM perturbation.

    Example:

    ```python
    with strategy.scope():
        classifier = build_classifier(backbone, num_labels=2)
        model = TrainingModel(
            classifier, keras.losses.SparseCategoricalCrossentropy(reduction=None)
        )
        model.compile(optimizer, metrics=[keras.metrics.SparseCategoricalAccuracy()])
    model.fit(dataset)
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        loss: keras.losses.Loss,
        jit_compile=False,
        class_weights=None,
        clip_norm=None,
        adversarial_embedding=None,
        adversarial_epsilon=0.1,
        **kwargs,
    ):
        super().__init__(name=kwargs.pop("name", "training_model"), **kwargs)
        if loss.reduction is not None:
            raise ValueError(
                f"`loss` must have reduction=None. Received: reduction={loss.reduction!r}."
            )
        self.classifier = model
        self.per_example_loss = loss
        self.class_weights = (
            None if class_weights is None else tf.constant(class_weights, tf.float32)
        )
        self.clip_norm = clip_norm
        self.perturbation = None
        self.adversarial_epsilon = adversarial_epsilon
        if adversarial_embedding is not None:
            self.perturbation = EmbeddingPerturbation(adversarial_embedding)
            self.adversarial_loss_tracker = keras.metrics.Mean(name="adversarial_loss")
        self._sums = tf.function(self._loss_sum_and_gradients, jit_compile=jit_compile)
        self._eval_sums = tf.function(self._loss_sum_and_outputs, jit_compile=jit_compile)

        # The functional classifier is built already, and so is this wrapper.
        self.built = True

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    # === Steps ===

    def _loss_sum(self, y, probabilities, sample_weight):
        losses = self.per_example_loss(y, probabilities)
        if sample_weight is not None:
            losses = losses * tf.cast(sample_weight, losses.dtype)
        return tf.reduce_sum(losses)

    def _forward_loss_sum(self, x, y, sample_weight):
        probabilities = self(x, training=True)
        loss_sum = self._loss_sum(y, probabilities, sample_weight)
        for extra in self.losses:
            loss_sum += tf.cast(extra, loss_sum.dtype) * _batch_size(x, loss_sum.dtype)
        return loss_sum, probabilities

    def _loss_sum_and_gradients(self, x, y, sample_weight):
        if self.perturbation is not None:
            return self._adversarial_sums(x, y, sample_weight)
        with tf.GradientTape() as tape:
            loss_sum, probabilities = self._forward_loss_sum(x, y, sample_weight)
            # Loss scaling for float16 mixed precision; identity otherwise.
            scaled = self.optimizer.scale_loss(loss_sum)
        gradients = tape.gradient(scaled, self.trainable_variables)
        return loss_sum, probabilities, gradients, None

    def adversarial_terms(self, x, y, sample_weight=None):
        """Run FGM's two forward and backward passes on one replica's batch.

        NOTE: tests and runs so far used float32 without XLA. The float16
        loss-scaling and XLA paths of FGM have not run.

        Returns:
            A dict with these keys:
            - `loss_sum`, `probabilities`, `gradients`: the clean pass.
            - `embedding_gradient`: the clean loss's gradient with respect
              to the word-embedding output, still loss-scaled under float16.
            - `perturbation`: that gradient scaled to norm
              `adversarial_epsilon` per example.
            - `adversarial_loss_sum`, `adversarial_gradients`: the pass
              under the perturbation.
        """
        perturbation = self.perturbation
        token_ids = x["token_ids"]
        with tf.GradientTape() as tape:
            delta = perturbation.zeros(token_ids)  # (batch, time, hidden)
            tape.watch(delta)
            perturbation.delta = delta
            loss_sum, probabilities = self._forward_loss_sum(x, y, sample_weight)
            scaled = self.optimizer.scale_loss(loss_sum)
        perturbation.delta = None
        *gradients, embedding_gradient = tape.gradient(scaled, [*self.trainable_variables, delta])
        moved = fgm_perturbation(embedding_gradient, self.adversarial_epsilon)
        with tf.GradientTape() as tape:
            perturbation.delta = moved
            adversarial_sum, _ = self._forward_loss_sum(x, y, sample_weight)
            scaled = self.optimizer.scale_loss(adversarial_sum)
        perturbation.delta = None
        return {
            "loss_sum": loss_sum,
            "probabilities": probabilities,
            "gradients": gradients,
            "embedding_gradient": embedding_gradient,
            "perturbation": moved,
            "adversarial_loss_sum": adversarial_sum,
            "adversarial_gradients": tape.gradient(scaled, self.trainable_variables),
        }

    def _adversarial_sums(self, x, y, sample_weight):
        terms = self.adversarial_terms(x, y, sample_weight)
        gradients = [
            _add_gradients(a, b)
            for a, b in zip(terms["gradients"], terms["adversarial_gradients"], strict=True)
        ]
        return terms["loss_sum"], terms["probabilities"], gradients, terms["adversarial_loss_sum"]

    def _loss_sum_and_outputs(self, x, y, sample_weight):
        probabilities = self(x, training=False)
        return self._loss_sum(y, probabilities, sample_weight), probabilities

    def train_step(self, data):
        x, y, sample_weight = data_adapters.data_adapter_utils.unpack_x_y_sample_weight(data)
        loss_weight = sample_weight
        if self.class_weights is not None:
            weights = tf.gather(self.class_weights, tf.reshape(tf.cast(y, tf.int32), [-1]))
            loss_weight = weights if sample_weight is None else weights * sample_weight
        if not self.trainable_variables:
            warnings.warn(
                "The model has no trainable weights; fit only computes the loss.", stacklevel=2
            )
            loss_sum, probabilities = self._eval_sums(x, y, loss_weight)
            gradients, adversarial_sum = [], None
        else:
            loss_sum, probabilities, gradients, adversarial_sum = self._sums(x, y, loss_weight)
        count = _batch_size(x, loss_sum.dtype)
        global_count = tf.distribute.get_replica_context().all_reduce("SUM", count)
        scale = tf.math.divide_no_nan(tf.constant(1.0, loss_sum.dtype), global_count)
        step_values = {}
        if gradients:
            gradients = [None if g is None else g * tf.cast(scale, g.dtype) for g in gradients]
            gradients, summed = self._replica_gradients(gradients)
            step_values = self._step_values(summed)
            if self.clip_norm is not None:
                gradients = self._clipped(gradients, step_values["gradient_norm"])
            self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        if adversarial_sum is not None:
            self.adversarial_loss_tracker.update_state(
                tf.math.divide_no_nan(adversarial_sum, count), sample_weight=count
            )
        logs = self._step_logs(x, y, probabilities, sample_weight, loss_sum, count)
        return logs | self._logs_for_reduction(step_values)

    def _clipped(self, gradients, norm):
        # `norm` is the norm of the summed, unscaled gradient, so one factor on
        # every replica's share clips the sum that the optimizer applies. A
        # non-finite norm gives a non-finite gradient, which float16's loss
        # scaling skips as before.
        factor = tf.minimum(1.0, self.clip_norm / norm)
        return [None if g is None else g * tf.cast(factor, g.dtype) for g in gradients]

    def _replica_gradients(self, gradients):
        """Return the gradients to hand the optimizer, and their sum over replicas.

        With 2+ replicas the gradients are all-reduced here and each replica
        hands the optimizer `sum / replicas`, which the optimizer's own
        all-reduce adds back up to the sum. So every replica passes the same
        values. Keras 3.15's `LossScaleOptimizer` decides whether to skip a
        float16 step from the first replica's gradients alone, because it
        assumes they are all-reduced already. Given each replica's own share,
        one overflowing replica put infinities into the weights.
        """
        present = [g for g in gradients if g is not None]
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas == 1:
            return gradients, present
        summed = tf.distribute.get_replica_context().all_reduce("SUM", present)
        shares = iter([g / tf.cast(replicas, g.dtype) for g in summed])
        return [None if g is None else next(shares) for g in gradients], summed

    def _step_values(self, summed):
        """Return the global gradient norm and, under float16, the loss scale.

        The norm is of the gradient the optimizer applies: summed over
        replicas, before loss scaling.
        """
        norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in summed])
        values = {}
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            loss_scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
            norm = norm / loss_scale
            values["loss_scale"] = loss_scale
        values["gradient_norm"] = norm
        return values

    def test_step(self, data):
        x, y, sample_weight = data_adapters.data_adapter_utils.unpack_x_y_sample_weight(data)
        loss_sum, probabilities = self._eval_sums(x, y, sample_weight)
        count = _batch_size(x, loss_sum.dtype)
        return self._step_logs(x, y, probabilities, sample_weight, loss_sum, count)

    def _step_logs(self, x, y, probabilities, sample_weight, loss_sum, count):
        # The tracker is a weighted mean whose sums add up over replicas, so
        # the logged loss is the mean over every example seen.
        self._loss_tracker.update_state(tf.math.divide_no_nan(loss_sum, count), sample_weight=count)
        logs = self.compute_metrics(x, y, probabilities, sample_weight=sample_weight)
        return self._logs_for_reduction(logs)

    # === MultiWorkerMirroredStrategy workarounds (Keras 3.15) ===

    def _logs_for_reduction(self, logs):
        # Keras reduces step logs with `strategy.reduce("MEAN", value,
        # axis=0)` under MultiWorkerMirroredStrategy, which fails on scalars
        # ("Invalid reduction dimension 0 for input with 0 dimensions"). The
        # values already agree across replicas, so shape [1] averages to the
        # same scalar.
        if not is_multi_worker(self.distribute_strategy):
            return logs
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras averages the first distributed batch over replicas with
        # `strategy.reduce`, which under MultiWorkerMirroredStrategy fails
        # with "Attempt to convert a value (PerReplica...)". Building needs
        # only shapes and dtypes, so this replica's own batch does.
        strategy = self.distribute_strategy
        if iterator is not None and is_multi_worker(strategy):
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], batch
                )
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _add_gradients(a, b):
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        # Embedding-table gradients stay sparse. A row in both adds up.
        return tf.IndexedSlices(
            tf.concat([a.values, b.values], axis=0),
            tf.concat([a.indices, b.indices], axis=0),
            a.dense_shape,
        )
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


def _batch_size(x, dtype):
    first = tf.nest.flatten(x)[0]
    return tf.cast(tf.shape(first)[0], dtype)


def build_training_model(
    config,
    backbone: keras.Model,
    num_labels: int,
    total_steps: int,
    jit_compile: bool = False,
    classifier: keras.Model | None = None,
    class_weights: list[float] | None = None,
) -> TrainingModel:
    """Build and compile the model a run trains, from its configuration.

    Call it inside the strategy's scope and the precision policy, as the
    trainer does.

    Args:
        config: The run's `Config`; its `model` section shapes the
            classifier and its `training` section the optimizer.
        backbone: The keras-hub backbone.
        num_labels: Number of classes.
        total_steps: Optimizer steps of the whole run, for the learning-rate
            schedule.
        jit_compile: Compile each replica's step with XLA.
        classifier: A classifier to train in place of the one `config.model`
            describes, built on `backbone` (the benchmarks pass other
            heads).
        class_weights: Loss weight of each class id (see `TrainingModel`);
            `None` or all ones weighs every example the same.

    With `data.task: multilabel` the classifier has sigmoid outputs, the
    loss is binary cross-entropy averaged over the labels, and the logged
    metric is `label_accuracy`, the share of right label decisions.

    Returns:
        A compiled `TrainingModel`; its `classifier` is the model to save.

    Example:

    ```python
    with strategy.scope():
        model = build_training_model(Config(), bundle.backbone, 2, total_steps=600)
    ```
    """
    training = config.training
    multilabel = config.data.task == "multilabel"
    if classifier is None:
        classifier = classifier_from_config(
            config.model, backbone, num_labels, training.seed, multilabel=multilabel
        )
    adversarial = training.adversarial == "fgm"
    optimizer = build_optimizer(
        training.learning_rate,
        total_steps,
        warmup_ratio=training.warmup_ratio,
        weight_decay=training.weight_decay,
        learning_rate_multipliers=learning_rate_multipliers(
            classifier,
            backbone,
            training.head_learning_rate_multiplier,
            training.layer_decay,
        ),
    )
    model = TrainingModel(
        classifier,
        keras.losses.BinaryCrossentropy(reduction=None)
        if multilabel
        else build_loss(training.loss, num_labels, training.label_smoothing, training.focal_gamma),
        jit_compile=jit_compile,
        class_weights=None
        if class_weights is None or set(class_weights) == {1.0}
        else class_weights,
        clip_norm=training.clip_norm,
        adversarial_embedding=backbone.token_embedding if adversarial else None,
        adversarial_epsilon=training.adversarial_epsilon,
    )
    # XLA is applied per replica by `TrainingModel`; Keras's own
    # `jit_compile` would compile the multi-replica step as one.
    model.compile(
        optimizer=optimizer,
        metrics=[
            keras.metrics.BinaryAccuracy(name="label_accuracy")
            if multilabel
            else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        ],
        jit_compile=False,
    )
    return model
