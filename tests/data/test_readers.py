import json
import os

import pytest

from conftest import SHARED_DATA
from fnn_keras.data.labels import LabelError, LabelVocabulary
from fnn_keras.data.readers import DataError, read_examples


def test_tsv_unquoted_keeps_quote_characters(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text('text\tlabel\n"quoted start\tpos\nplain "middle" text\tneg\n', "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ['"quoted start', 'plain "middle" text']
    assert examples.labels == ["pos", "neg"]
    assert examples.lines == [2, 3]


def test_csv_quoted_fields(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(
        '\ufefftext,label\r\n"first line\nsecond, with ""quotes""",pos\r\nok,neg\r\n'.encode()
    )
    examples = read_examples(str(path))
    assert examples.texts == ['first line\nsecond, with "quotes"', "ok"]
    assert examples.labels == ["pos", "neg"]
    assert examples.lines == [2, 4]


def test_jsonl_with_custom_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"sentence": "很好", "y": 1}, {"sentence": "bad", "y": 0}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    examples = read_examples(str(path), text_column="sentence", label_column="y")
    assert examples.texts == ["很好", "bad"]
    assert examples.labels == ["1", "0"]


def test_rows_skipped_and_counted(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text(
        "text\tlabel\ngood\tpos\n   \tneg\nno label\t\nextra\tpos\tx\nfine\tneg\n", "utf-8"
    )
    examples = read_examples(str(path))
    assert examples.texts == ["good", "fine"]
    assert examples.skipped == {
        "empty text": 1,
        "missing label": 1,
        "wrong number of fields (expected 2)": 1,
    }


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("empty.tsv", "", "empty"),
        ("no_column.tsv", "sentence\tlabel\nx\ty\n", "'text'"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{broken\n', "bad.jsonl:2"),
        ("data.xml", "<a/>", "unknown file type"),
        ("only_bad.tsv", "text\tlabel\n\tpos\n", "no rows"),
    ],
    ids=["empty", "missing_column", "invalid_json", "unknown_type", "no_usable_rows"],
)
def test_reader_errors(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content, "utf-8")
    with pytest.raises(DataError, match=fragment):
        read_examples(str(path))


def test_reader_invalid_utf8(tmp_path):
    path = tmp_path / "gbk.tsv"
    path.write_bytes("text\tlabel\n好\t1\n".encode("gbk"))
    with pytest.raises(DataError, match="gbk.tsv.*UTF-8"):
        read_examples(str(path))


def test_labels_sorted_and_checked():
    vocab = LabelVocabulary.from_labels(["10", "2", "2", "1"])
    assert vocab.labels == ["1", "2", "10"]
    assert vocab.encode(["10", "1"]) == [2, 0]
    with pytest.raises(LabelError, match=r"'7' \(2\), '9' \(1\)"):
        vocab.check(["7", "9", "7", "1"], "dev.tsv")


def test_labels_save_and_load(tmp_path):
    vocab = LabelVocabulary.from_labels(["正面", "负面"])
    vocab.save(str(tmp_path / "labels.json"))
    assert LabelVocabulary.load(str(tmp_path / "labels.json")).labels == vocab.labels


@pytest.mark.skipif(
    not os.path.isdir(SHARED_DATA),
    reason="needs ../shared/data beside the checkout (present in CI, absent in a fresh clone)",
)
@pytest.mark.parametrize(
    "path, rows",
    [
        ("sst2/train.tsv", 67348),
        ("sst2/dev.tsv", 872),
        ("chnsenticorp/train.tsv", 8913),
        ("tnews/dev.tsv", 10000),
    ],
    ids=["sst2_train", "sst2_dev", "chnsenticorp_train", "tnews_dev"],
)
def test_shared_datasets_read_completely(path, rows):
    examples = read_examples(os.path.join(SHARED_DATA, path))
    assert len(examples) == rows
    assert examples.skipped == {}


def test_csv_unclosed_quote_is_an_error(tmp_path):
    path = tmp_path / "data.csv"
    rows = ["text,label", "good,pos", '"unclosed quote,neg'] + [f"row {i},pos" for i in range(5)]
    path.write_text("\n".join(rows) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"data.csv:3: .*unclosed quote"):
        read_examples(str(path))


def test_jsonl_text_not_a_string(tmp_path, caplog):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": ["a"], "label": 1}\n{"text": "b", "label": 0}\n', "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ["b"]
    assert examples.skipped == {"text is not a string": 1}
    assert "line 1" in caplog.text
