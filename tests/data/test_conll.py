"""Tests of the CoNLL reader and the tag vocabulary."""

import logging
import os

import pytest

from conftest import SHARED_DATA
from fnn_keras.data.conll import build_tag_vocabulary, read_conll
from fnn_keras.data.labels import LabelError
from fnn_keras.data.readers import DataError

RESUME_NER = os.path.join(SHARED_DATA, "resume_ner")


def write_text(path, text, encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as file:
        file.write(text)
    return str(path)


def test_reads_sentences_and_line_numbers(tmp_path):
    path = write_text(
        tmp_path / "a.conll",
        "\ufeff张\tB-NAME\n三\tI-NAME\n在\tO\n\n\n北\tB-LOC\r\n京\tI-LOC\r\n\n",
    )

    sentences = read_conll(path)

    assert sentences.tokens == [["张", "三", "在"], ["北", "京"]]
    assert sentences.tags == [["B-NAME", "I-NAME", "O"], ["B-LOC", "I-LOC"]]
    assert sentences.lines == [1, 6]
    assert sentences.token_count == 5
    assert sentences.skipped == {}


def test_last_sentence_without_blank_line(tmp_path):
    path = write_text(tmp_path / "a.conll", "a\tO\n\nJohn\tB-PER")

    assert read_conll(path).tokens == [["a"], ["John"]]


def test_i_tag_after_o_is_accepted(tmp_path):
    path = write_text(tmp_path / "a.conll", "x\tO\ny\tI-ORG\n")

    assert read_conll(path).tags == [["O", "I-ORG"]]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("a b O", "not exactly one tab (0 found)"),
        ("a\tO\tO", "not exactly one tab (2 found)"),
        ("\tO", "empty token"),
        ("a\t", "empty tag"),
        ("a\tB-", "tag not O, B-TYPE or I-TYPE"),
        ("a\tS-PER", "tag not O, B-TYPE or I-TYPE"),
    ],
    ids=["no_tab", "two_tabs", "empty_token", "empty_tag", "bare_prefix", "bmes_tag"],
)
def test_bad_line_skips_sentence(tmp_path, caplog, line, reason):
    path = write_text(tmp_path / "a.conll", f"a\tO\n\nb\tO\n{line}\nc\tO\n\nd\tO\n")

    with caplog.at_level(logging.WARNING):
        sentences = read_conll(path)

    assert sentences.tokens == [["a"], ["d"]]
    assert sentences.skipped == {reason: 1}
    assert "line 3" in caplog.text


def test_bad_line_error_names_file_and_line(tmp_path):
    path = write_text(tmp_path / "a.conll", "a\tO\n\nb\tO\nc O\n")

    with pytest.raises(DataError) as raised:
        read_conll(path, on_bad_row="error")

    message = str(raised.value)
    assert message.startswith(f"{path}:4: not exactly one tab")
    assert "--on-bad-row skip" in message


def test_encoding_is_honoured(tmp_path):
    path = write_text(tmp_path / "a.conll", "北\tB-LOC\n京\tI-LOC\n", encoding="gb18030")

    assert read_conll(path, encoding="gb18030").tokens == [["北", "京"]]
    with pytest.raises(DataError, match="--encoding"):
        read_conll(path)


def test_empty_and_missing_files(tmp_path):
    empty = write_text(tmp_path / "empty.conll", "\n\n")

    with pytest.raises(DataError, match="is empty"):
        read_conll(empty)
    with pytest.raises(DataError, match="not found"):
        read_conll(str(tmp_path / "missing.conll"))
    only_bad = write_text(tmp_path / "bad.conll", "a b\n")
    with pytest.raises(DataError, match="no usable sentences"):
        read_conll(only_bad)


def test_tag_vocabulary_puts_o_first(tmp_path):
    train = read_conll(write_text(tmp_path / "t.conll", "a\tI-PER\nb\tB-LOC\nc\tO\nd\tB-PER\n"))
    dev = read_conll(write_text(tmp_path / "d.conll", "a\tB-PER\n"))

    vocabulary = build_tag_vocabulary(train, dev)

    assert vocabulary.labels == ["O", "B-LOC", "B-PER", "I-PER"]


def test_tag_vocabulary_rejects_unknown_dev_tag(tmp_path):
    train = read_conll(write_text(tmp_path / "t.conll", "a\tB-PER\nb\tO\n"))
    dev = read_conll(write_text(tmp_path / "d.conll", "a\tB-ORG\nb\tI-ORG\nc\tB-ORG\n"))

    with pytest.raises(LabelError) as raised:
        build_tag_vocabulary(train, dev)

    message = str(raised.value)
    assert "'B-ORG' (2)" in message
    assert "'I-ORG' (1)" in message
    assert str(tmp_path / "d.conll") in message


def test_tag_vocabulary_needs_an_entity(tmp_path):
    train = read_conll(write_text(tmp_path / "t.conll", "a\tO\n"))

    with pytest.raises(LabelError, match="no B-TYPE or I-TYPE"):
        build_tag_vocabulary(train, train)


@pytest.mark.skipif(
    not os.path.isdir(RESUME_NER),
    reason="../shared/data is absent: the Resume NER files are not next to the repository",
)
def test_resume_ner_counts():
    train = read_conll(os.path.join(RESUME_NER, "train.conll"))
    dev = read_conll(os.path.join(RESUME_NER, "dev.conll"))

    # The cleaned Resume NER splits: 3,814 and 462 sentences, 8 entity types in BIO.
    assert (len(train), train.token_count) == (3814, 123993)
    assert (len(dev), dev.token_count) == (462, 13876)
    vocabulary = build_tag_vocabulary(train, dev)
    assert len(vocabulary) == 17
