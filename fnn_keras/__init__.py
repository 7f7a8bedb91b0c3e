"""Fine-tune BERT with a feedback RNN head, and export it for serving.

Importing the package registers its Keras layers, so a saved `.keras` model
loads with `keras.saving.load_model` and no `custom_objects`.
"""

import keras

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "fnn_keras needs the TensorFlow backend of Keras, but Keras is using "
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from fnn_keras.backbones import ExactGeluBertBackbone, load_backbone  # noqa: E402
from fnn_keras.layers import FeedbackCell, FeedbackLayer  # noqa: E402
from fnn_keras.models.classifier import build_classifier  # noqa: E402
from fnn_keras.training.optimization import WarmupLinearDecay  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "ExactGeluBertBackbone",
    "FeedbackCell",
    "FeedbackLayer",
    "WarmupLinearDecay",
    "build_classifier",
    "load_backbone",
]
