"""Keras layers of the feedback RNN."""

from fnn_keras.layers.feedback_cell import FeedbackCell
from fnn_keras.layers.feedback_layer import FeedbackLayer

__all__ = ["FeedbackCell", "FeedbackLayer"]
