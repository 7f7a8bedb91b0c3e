"""SavedModel export in the TF Serving layout, with tokenization in the graph.

The raw-text SavedModel has three signatures. `serving_default` takes text
and `predict_ids` takes token ids, and both return probabilities. `tokenize`
takes text and returns the token ids that `serving_default` computes.
`export_saved_model` describes them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from fnn_keras.data.pipeline import string_inputs, trim_batch
from fnn_keras.models.classifier import INPUT_NAMES

logger = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def next_version(model_dir: str) -> int:
    """Return one more than the highest numeric version under `model_dir`.

    Example:

    ```python
    next_version("exported/my-run")  # 1 for a fresh run
    ```
    """
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def _outputs(probabilities, label_table, threshold=None, label_thresholds=None, delimiter=","):
    if label_thresholds is not None:
        # A multi-label model: every label at or above its own threshold.
        mask = probabilities >= label_thresholds
        names = tf.broadcast_to(label_table, tf.shape(probabilities))
        return {
            "probabilities": probabilities,
            "label_mask": tf.cast(mask, tf.int32),
            "labels": tf.strings.reduce_join(
                tf.ragged.boolean_mask(names, mask), axis=-1, separator=delimiter
            ),
        }
    if threshold is None:
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    else:
        # The rule of `predicted_ids`: the second label at or above the threshold.
        label_id = tf.cast(probabilities[:, 1] >= threshold, tf.int32)
    return {
        "probabilities": probabilities,
        "label": tf.gather(label_table, label_id),
        "label_id": label_id,
    }


def text_arguments(texts) -> dict[str, tf.Tensor]:
    """Return the raw-text signature arguments for texts or `(text, text_pair)` tuples.

    Example:

    ```python
    signature(**text_arguments([("a question", "an answer")]))
    ```
    """
    strings = string_inputs(texts)
    if isinstance(strings, tuple):
        return {"text": strings[0], "text_pair": strings[1]}
    return {"text": strings}


def write_warmup_requests(path: str, model_name: str, texts: list) -> None:
    """Write TF Serving warmup records: one `PredictionLog` per text.

    Each record is a `serving_default` Predict request with a batch of one
    text (or one text pair), built with the tensorflow-serving-api protos.

    Args:
        path: Destination, `<version>/assets.extra/tf_serving_warmup_requests`.
        model_name: The model name TF Serving serves the export under.
        texts: The texts, or `(text, text_pair)` tuples, to send; at most a
            few are needed.

    Example:

    ```python
    write_warmup_requests(path, "my-run", ["a fine film"])
    ```
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for text in texts:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
            )
            for name, value in text_arguments([text]).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def write_models_config(path: str, model_name: str) -> None:
    """Write a TF Serving model server config for a run's two SavedModels.

    `<model_name>` takes raw text and needs TF Text ops. Its base path is
    `/models/<model_name>`, where the README's `docker run` command mounts
    the run directory. `<model_name>-ids` takes token ids and lives in the
    `ids_only/` subdirectory.

    Example:

    ```python
    write_models_config("exported/my-run/models.config", "my-run")
    ```
    """
    entries = [
        (model_name, f"/models/{model_name}"),
        (f"{model_name}-ids", f"/models/{model_name}/ids_only"),
    ]
    text = "model_config_list {\n"
    for name, base_path in entries:
        text += (
            "  config {\n"
            f'    name: "{name}"\n'
            f'    base_path: "{base_path}"\n'
            '    model_platform: "tensorflow"\n'
            "  }\n"
        )
    text += "}\n"
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def export_saved_model(
    model: keras.Model,
    preprocessor,
    labels: list[str],
    model_dir: str,
    warmup_texts: list | None = None,
    version: int | None = None,
    text_pair: bool = False,
    threshold: float | None = None,
    label_thresholds: list[float] | None = None,
    label_delimiter: str = ",",
) -> str:
    """Export `model` as the next numbered SavedModel version for TF Serving.

    The export has three signatures:

    - `serving_default`: input `text`, a batch of raw UTF-8 strings, and
      for a sentence-pair model also `text_pair`; tokenization runs inside
      the graph with TensorFlow Text ops.
    - `predict_ids`: inputs `token_ids`, `segment_ids` and `padding_mask`,
      int32 `(batch, sequence)`, as a client makes them from the tokenizer
      files. Its function has no TensorFlow Text ops.
    - `tokenize`: input `text`, as for `serving_default`. It returns the
      features that `serving_default` feeds the model, from the same
      preprocessor: `token_ids`, `segment_ids` and `padding_mask`, int32
      `(batch, longest)`. `longest` is the token count of the batch's
      longest text after truncation, `[CLS]` and `[SEP]` included. Clients
      can check their own ids against it, cut to the same length.

    `serving_default` and `predict_ids` return `probabilities` (float32,
    `(batch, num_labels)`), `label` (string) and `label_id` (int32): the
    most probable label, or with `threshold` the second label where its
    probability is at least the threshold and the first elsewhere. A
    multi-label model (`label_thresholds` given) returns `probabilities`,
    `label_mask` (int32 `(batch, num_labels)`, 1 where the probability is
    at least the label's threshold) and `labels` (string: the predicted
    labels joined by `label_delimiter`, empty when none). The
    version is written to a temporary directory beside the final one and
    renamed into place when complete, so a server watching `model_dir` never
    sees half an export.

    With `preprocessor=None`, the export holds only the token-id function,
    under both `serving_default` and `predict_ids`, and has no `tokenize`.
    Loading a SavedModel registers every op of every function in it, so
    only such an export loads where TensorFlow Text ops are missing.

    Args:
        model: The trained classifier taking token-id dictionaries.
        preprocessor: The keras-hub preprocessor used in training, or `None`
            for a token-id-only export.
        labels: Label names in class-id order.
        model_dir: `<export_dir>/<run_name>`; versions go below it.
        warmup_texts: Texts (or `(text, text_pair)` tuples) for
            `assets.extra/tf_serving_warmup_requests`; `None` writes no
            warmup file. Needs `preprocessor`.
        version: Version number; defaults to `next_version(model_dir)`.
        text_pair: The model reads sentence pairs: `serving_default` and
            `tokenize` then take a second string input, `text_pair`.
        threshold: The decision threshold of a binary model
            (`thresholds.json`), or `None` for the most probable label.
        label_thresholds: The per-label thresholds of a multi-label model
            (`label_thresholds.json`), or `None` for a single-label model.
        label_delimiter: Separator of the joined `labels` output.

    Returns:
        The path of the new version directory.

    Example:

    ```python
    path = export_saved_model(model, preprocessor, ["neg", "pos"], "exported/run")
    ```
    """
    os.makedirs(model_dir, exist_ok=True)
    version = version or next_version(model_dir)
    final_path = os.path.join(model_dir, str(version))
    if os.path.exists(final_path):
        raise FileExistsError(17, "SavedModel version already exists", final_path)
    label_table = tf.constant(labels, dtype=tf.string)
    if label_thresholds is not None:
        label_thresholds = tf.constant(label_thresholds, tf.float32)

    def outputs(probabilities):
        return _outputs(probabilities, label_table, threshold, label_thresholds, label_delimiter)

    # NOTE: the written variables come to about twice the float32 weights:
    # 189 MB for MiniLM, whose weights are 91 MB. The cause is not known yet.
    archive = keras.export.ExportArchive()
    archive.track(model)

    id_signature = [tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]

    @tf.function(input_signature=id_signature)
    def serve_ids(token_ids, segment_ids, padding_mask):
        features = {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": padding_mask,
        }
        return outputs(model(features, training=False))

    if preprocessor is not None:
        if not preprocessor.built:
            preprocessor(tf.constant([""]))
        archive.track(preprocessor)

        if text_pair:
            pair_signature = [
                tf.TensorSpec([None], tf.string, name="text"),
                tf.TensorSpec([None], tf.string, name="text_pair"),
            ]

            @tf.function(input_signature=pair_signature)
            def serve_text(text, text_pair):
                features = trim_batch(preprocessor(x=(text, text_pair)))
                return outputs(model(features, training=False))

            @tf.function(input_signature=pair_signature)
            def serve_tokenize(text, text_pair):
                return trim_batch(preprocessor(x=(text, text_pair)))

        else:
            text_signature = [tf.TensorSpec([None], tf.string, name="text")]

            @tf.function(input_signature=text_signature)
            def serve_text(text):
                features = trim_batch(preprocessor(text))
                return outputs(model(features, training=False))

            @tf.function(input_signature=text_signature)
            def serve_tokenize(text):
                return trim_batch(preprocessor(text))

        archive.add_endpoint("serving_default", serve_text)
        archive.add_endpoint("tokenize", serve_tokenize)
    else:
        archive.add_endpoint("serving_default", serve_ids)
        warmup_texts = None
    archive.add_endpoint("predict_ids", serve_ids)

    temporary = tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir)
    try:
        archive.write_out(temporary, verbose=False)
        if warmup_texts:
            write_warmup_requests(
                os.path.join(temporary, WARMUP_FILE),
                os.path.basename(os.path.normpath(model_dir)),
                warmup_texts,
            )
        os.rename(temporary, final_path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("Exported SavedModel version %d to %s", version, final_path)
    return final_path
