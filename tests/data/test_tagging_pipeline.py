"""Tests of word-piece alignment for tagging and the tiny character vocabulary."""

import numpy as np
import pytest

from fnn_keras.backbones import load_backbone, vocabulary_from_tokens
from fnn_keras.config import ConfigError, config_from_dict
from fnn_keras.data.tagging_pipeline import align_sentences, tagging_dataset, word_tags


@pytest.fixture(scope="module")
def tokenizer(tiny_bundle):
    return tiny_bundle.tokenizer


def test_tag_on_first_piece_only(tokenizer):
    # "films" becomes the two pieces "film", "##s" in the tiny vocabulary.
    aligned = align_sentences(tokenizer, [["good", "films", "a"]], 8, [[1, 2, 3]])

    pieces = tokenizer.id_to_token
    kept = [pieces(int(i)) for i in aligned.token_ids[0] if i != tokenizer.pad_token_id]
    assert kept == ["[CLS]", "good", "film", "##s", "a", "[SEP]"]
    assert aligned.weights[0].tolist() == [0, 1, 1, 0, 1, 0, 0, 0]
    assert aligned.tag_ids[0].tolist() == [0, 1, 2, 0, 3, 0, 0, 0]
    assert aligned.padding_mask[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert aligned.word_positions[0].tolist() == [1, 2, 4]
    assert aligned.token_ids.dtype == np.int32
    assert aligned.padding_mask.dtype == np.int32
    assert aligned.weights.dtype == np.float32
    assert aligned.truncated_sentences == 0


def test_truncation_is_counted(tokenizer):
    # Room for 3 pieces: "good", "film", "##s"; "a" and "the" are cut off.
    aligned = align_sentences(tokenizer, [["good", "films", "a", "the"], ["a"]], 5, [[1] * 4, [2]])

    assert aligned.truncated_sentences == 1
    assert aligned.truncated_words == 2
    assert aligned.word_positions[0].tolist() == [1, 2, -1, -1]
    assert aligned.padding_mask[0].tolist() == [1, 1, 1, 1, 1]
    assert aligned.weights[0].sum() == 2


def test_word_split_at_cut_is_counted(tokenizer):
    # Room for 2 pieces: "good", "film"; "##s" does not fit.
    aligned = align_sentences(tokenizer, [["good", "films"]], 4, [[1, 2]])

    assert aligned.truncated_sentences == 1
    assert aligned.truncated_words == 0
    assert aligned.word_positions[0].tolist() == [1, 2]


def test_word_without_pieces_is_counted(tokenizer):
    aligned = align_sentences(tokenizer, [["good", "\u200b", "a"]], 8, [[1, 2, 3]])

    assert aligned.words_without_pieces == 1
    assert aligned.word_positions[0].tolist() == [1, -1, 2]
    assert word_tags(aligned.tag_ids, aligned, ["O", "B-X", "I-X", "B-Y"]) == [["B-X", "O", "B-Y"]]


def test_dataset_batches_are_trimmed(tokenizer):
    aligned = align_sentences(tokenizer, [["good"], ["good", "films", "a"], ["a"]], 16, None)

    batches = list(tagging_dataset(aligned, batch_size=2))

    features, tags, weights = batches[0]
    assert features["token_ids"].shape == (2, 6)
    assert features["padding_mask"].dtype == "int32"
    assert tags.shape == (2, 6)
    assert weights.shape == (2, 6)
    assert batches[1][0]["token_ids"].shape == (1, 3)


def test_character_vocabulary_keeps_each_character():
    characters = ["张", "三", "Ａ", "é", "Ⅱ", "A", "b", "。", "MBA"]
    vocabulary = vocabulary_from_tokens(characters + ["New York"])

    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "New York" not in vocabulary
    assert "##A" in vocabulary
    bundle = load_backbone("tiny", vocabulary=vocabulary)
    tokenizer = bundle.tokenizer
    for character in characters:
        ids = tokenizer(character).numpy().tolist()
        assert [tokenizer.id_to_token(i) for i in ids] == [character], character
    # A word of known characters splits into pieces instead of [UNK].
    ids = tokenizer("AbA").numpy().tolist()
    assert [tokenizer.id_to_token(i) for i in ids] == ["A", "##b", "##A"]


def test_vocabulary_setting_needs_tiny_tagging():
    values = {"data": {"task": "tagging", "train": "t", "dev": "d"}}

    with pytest.raises(ConfigError, match="needs --backbone tiny and --task tagging"):
        config_from_dict({**values, "model": {"backbone": "minilm", "vocabulary": "train"}})
    with pytest.raises(ConfigError, match="must be 'train'"):
        config_from_dict({**values, "model": {"backbone": "tiny", "vocabulary": "words"}})
    config = config_from_dict({**values, "model": {"backbone": "tiny", "vocabulary": "train"}})
    assert config.model.vocabulary == "train"
