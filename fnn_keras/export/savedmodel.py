"""SavedModel export in the TF Serving layout, with tokenization in the graph."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from fnn_keras.data.pipeline import trim_batch

logger = logging.getLogger(__name__)


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


def export_saved_model(model: keras.Model, preprocessor, labels: list[str], model_dir: str) -> str:
    """Export `model` as the next numbered SavedModel version for TF Serving.

    The `serving_default` signature takes a batch of raw UTF-8 strings named
    `text` and returns `probabilities` (float32, `(batch, num_labels)`),
    `label` (string) and `label_id` (int32). Tokenization runs inside the
    graph. The version is written to a temporary directory beside the final
    one and renamed into place when complete, so a server watching
    `model_dir` never sees half an export.

    Args:
        model: The trained classifier taking token-id dictionaries.
        preprocessor: The keras-hub preprocessor used in training.
        labels: Label names in class-id order.
        model_dir: `<export_dir>/<run_name>`; versions go below it.

    Returns:
        The path of the new version directory.

    Example:

    ```python
    path = export_saved_model(model, preprocessor, ["neg", "pos"], "exported/run")
    ```
    """
    os.makedirs(model_dir, exist_ok=True)
    version = next_version(model_dir)
    final_path = os.path.join(model_dir, str(version))
    label_table = tf.constant(labels, dtype=tf.string)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(preprocessor)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(text):
        features = trim_batch(preprocessor(text))
        probabilities = model(features, training=False)
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "label": tf.gather(label_table, label_id),
            "label_id": label_id,
        }

    archive.add_endpoint("serving_default", serve_text)

    temporary = tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir)
    try:
        archive.write_out(temporary, verbose=False)
        os.rename(temporary, final_path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("Exported SavedModel version %d to %s", version, final_path)
    return final_path
