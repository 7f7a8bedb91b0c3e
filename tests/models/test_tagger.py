"""Tests of the token tagger model."""

import keras
import numpy as np

from conftest import tiny_backbone_without_dropout
from fnn_keras.models.tagger import build_tagger, tag_probabilities


def _features(rows):
    """Pad rows of token ids with 0 to the longest row, with a mask."""
    length = max(len(row) for row in rows)
    token_ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for index, row in enumerate(rows):
        token_ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids), "padding_mask": mask}


def test_tagger_output_shape_and_sums():
    keras.utils.set_random_seed(3)
    model = build_tagger(tiny_backbone_without_dropout(3), num_tags=5, feedback_units=4)

    probabilities = keras.ops.convert_to_numpy(model(_features([[2, 7, 8, 3], [2, 9, 3]])))

    assert probabilities.shape == (2, 4, 5)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_padding_does_not_change_real_positions():
    # Both directions of the feedback layer must skip the padding, so a
    # sentence padded in a batch gets the probabilities it gets alone.
    keras.utils.set_random_seed(4)
    model = build_tagger(
        tiny_backbone_without_dropout(4), num_tags=3, feedback_units=4, dropout=0.0
    )
    short = [2, 7, 8, 3]

    alone = keras.ops.convert_to_numpy(model(_features([short])))
    padded = keras.ops.convert_to_numpy(model(_features([short, [2, 9, 10, 11, 12, 13, 3]])))

    np.testing.assert_allclose(padded[0, :4], alone[0], atol=1e-5, rtol=1e-5)


def test_tag_probabilities_matches_model():
    keras.utils.set_random_seed(5)
    model = build_tagger(
        tiny_backbone_without_dropout(5), num_tags=3, feedback_units=4, dropout=0.0
    )
    features = _features([[2, 7, 3], [2, 9, 10, 11, 3], [2, 3]])
    padded = {name: np.pad(value, [(0, 0), (0, 3)]) for name, value in features.items()}

    probabilities = tag_probabilities(model, padded, batch_size=2)

    assert probabilities.shape == (3, 8, 3)
    expected = keras.ops.convert_to_numpy(model(features))
    real = features["padding_mask"].astype(bool)
    np.testing.assert_allclose(probabilities[:, :5][real], expected[real], atol=1e-5, rtol=1e-5)
    # Past each batch's longest row the output stays 0.
    assert probabilities[2, 2:].max() == 0.0
    assert probabilities[:2, 5:].max() == 0.0
