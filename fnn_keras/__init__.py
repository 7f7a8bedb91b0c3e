"""Fine-tune BERT with a feedback RNN head, and export it for serving.

Importing the package registers its Keras layers, so a saved `.keras` model
loads with `keras.saving.load_model` and no `custom_objects`.
"""

import os

# TensorFlow's C++ start-up messages (oneDNN, CUDA probing) bury the CLI's
# output; a TF_CPP_MIN_LOG_LEVEL set by the user still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "fnn_keras needs the TensorFlow backend of Keras, but Keras is using "
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from fnn_keras.layers import FeedbackCell, FeedbackLayer  # noqa: E402
from fnn_keras.training.optimization import WarmupLinearDecay  # noqa: E402

__version__ = "0.1.0"
__all__ = ["FeedbackCell", "FeedbackLayer", "WarmupLinearDecay"]
