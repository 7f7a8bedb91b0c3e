"""Tests of splitting raw text into words with character offsets."""

import pytest

from fnn_keras.data.words import split_words


@pytest.mark.parametrize(
    "text, words",
    [
        ("张三在北京", ["张", "三", "在", "北", "京"]),
        ("John works at Acme.", ["John", "works", "at", "Acme", "."]),
        ("  I love  MBA课程, ok", ["I", "love", "MBA", "课", "程", ",", "ok"]),
        ("中文，English！", ["中", "文", "，", "English", "！"]),
        ("", []),
    ],
    ids=["chinese", "english", "mixed_spaces", "full_width_punctuation", "empty"],
)
def test_split_words_offsets(text, words):
    split = split_words(text)

    assert [word.text for word in split] == words
    for word in split:
        assert text[word.start : word.end] == word.text


def test_cjk_kept_together_without_split():
    assert [word.text for word in split_words("北京 x", split_on_cjk=False)] == ["北京", "x"]
