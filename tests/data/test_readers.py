import json
import logging
import os

import pytest

from conftest import SHARED_DATA
from fnn_keras.data.labels import LabelError, LabelVocabulary
from fnn_keras.data.readers import ON_BAD_ROW_CHOICES, DataError, Examples, read_examples


def write_jsonl(path, records):
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def test_tsv_unquoted_keeps_quote_characters(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text('text\tlabel\n"quoted start\tpos\nplain "middle" text\tneg\n', "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ['"quoted start', 'plain "middle" text']
    assert examples.labels == ["pos", "neg"]
    assert examples.lines == [2, 3]


def test_tsv_unbalanced_quote_keeps_lines_apart(tmp_path):
    # With quoting off, a quote starts no quoted field, so the next lines stay separate rows.
    path = tmp_path / "data.tsv"
    path.write_text('text\tlabel\nhe said "stop\tneg\nnext line\tpos\nlast "one\tneg\n', "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ['he said "stop', "next line", 'last "one']
    assert examples.labels == ["neg", "pos", "neg"]
    assert examples.lines == [2, 3, 4]
    assert examples.skipped == {}


def test_csv_quoted_fields(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(
        '\ufefftext,label\r\n"first line\nsecond, with ""quotes""",pos\r\nok,neg\r\n'.encode()
    )
    examples = read_examples(str(path))
    assert examples.texts == ['first line\nsecond, with "quotes"', "ok"]
    assert examples.labels == ["pos", "neg"]
    assert examples.lines == [2, 4]


def test_csv_multiline_field_is_one_example(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        'text,label\n"first line\nsecond line, with a comma and ""quotes""",pos\n', "utf-8"
    )
    examples = read_examples(str(path))
    assert len(examples) == 1
    assert examples.texts == ['first line\nsecond line, with a comma and "quotes"']
    assert examples.labels == ["pos"]
    assert examples.lines == [2]
    assert examples.rows_read == 1


def test_csv_quoted_text_kept_verbatim(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b'text,label\r\n"  tab\there\r\nnext  ",pos\r\n')
    examples = read_examples(str(path))
    assert examples.texts == ["  tab\there\r\nnext  "]
    assert examples.labels == ["pos"]


def test_jsonl_with_custom_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [{"sentence": "很好", "y": 1}, {"sentence": "bad", "y": 0}])
    examples = read_examples(str(path), text_column="sentence", label_column="y")
    assert examples.texts == ["很好", "bad"]
    assert examples.labels == ["1", "0"]


def test_jsonl_label_types(tmp_path):
    path = tmp_path / "data.jsonl"
    labels = [1, 1.0, 2.5, True, False, " pos ", 0, ["pos"], {"a": 1}]
    write_jsonl(path, [{"text": f"row {i}", "label": label} for i, label in enumerate(labels)])
    examples = read_examples(str(path))
    assert examples.labels == ["1", "1", "pos", "0"]
    assert examples.skipped == {"label is not a string or integer": 5}
    with pytest.raises(DataError, match=r"data.jsonl:3: label is not a string or integer"):
        read_examples(str(path), on_bad_row="error")


def test_csv_unclosed_quote_in_label_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\ngood,pos\nnice,"pos\nawful,neg\nfine,pos\n', "utf-8")
    with pytest.raises(DataError, match=r"data.csv:3: .*unclosed quote"):
        read_examples(str(path))


def test_header_names_stripped(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text(" text \t label \nhello\tpos\n", "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ["hello"]
    assert examples.labels == ["pos"]


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
    assert examples.rows_read == 5


def test_skipped_rows_logged_with_lines(tmp_path, caplog):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\ngood\tpos\n\tneg\nok\tpos\n \tneg\n", "utf-8")
    with caplog.at_level(logging.WARNING, logger="fnn_keras.data.readers"):
        read_examples(str(path))
    assert "skipped 2 row(s)" in caplog.text
    assert "2 with empty text (line 3, 5)" in caplog.text


def test_blank_lines_counted_except_at_end(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\ngood\tpos\n\n  \nfine\tneg\n\n\n", "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ["good", "fine"]
    assert examples.lines == [2, 5]
    assert examples.skipped == {"blank line": 2}
    assert examples.rows_read == 4


def test_rows_read_is_kept_plus_skipped(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,pos\n,neg\n\nb,\nc,pos,extra\nd,neg\n", "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ["a", "d"]
    assert examples.rows_read == 6
    assert examples.rows_read == len(examples) + sum(examples.skipped.values())


def test_rows_read_jsonl_ignores_blank_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "a", "label": 1}\n\n{"text": "", "label": 0}\n{"text": "b", "label": 0}\n\n',
        "utf-8",
    )
    examples = read_examples(str(path))
    assert examples.texts == ["a", "b"]
    assert examples.lines == [1, 4]
    assert examples.skipped == {"empty text": 1}
    assert examples.rows_read == 3


@pytest.mark.parametrize(
    "name, content, pair_column, line, reason",
    [
        ("data.tsv", "text\tlabel\nok\tpos\n \tneg\n", None, 3, "empty text"),
        ("data.csv", "text,label\nok,pos\nfine,neg\nno label,\n", None, 4, "missing label"),
        (
            "data.tsv",
            "text\tlabel\nok\tpos\nextra\tpos\tx\n",
            None,
            3,
            "wrong number of fields (expected 2, found 3)",
        ),
        ("data.tsv", "text\tlabel\nok\tpos\n\nfine\tneg\n", None, 3, "blank line"),
        (
            "data.tsv",
            "text\tpair\tlabel\nok\tyes\tpos\nok\t\tneg\n",
            "pair",
            3,
            "empty text pair",
        ),
        (
            "data.jsonl",
            '{"text": "a", "label": 1}\n{"text": 5, "label": 1}\n',
            None,
            2,
            "text is not a string (key 'text' is a JSON number)",
        ),
        ("data.jsonl", '{"text": "a"}\n', None, 1, "missing label"),
    ],
    ids=[
        "empty_text",
        "missing_label",
        "wrong_field_count",
        "blank_line",
        "empty_pair",
        "jsonl_text_not_string",
        "jsonl_missing_label",
    ],
)
def test_on_bad_row_error_stops_at_first(tmp_path, name, content, pair_column, line, reason):
    path = tmp_path / name
    path.write_text(content, "utf-8")
    with pytest.raises(DataError) as caught:
        read_examples(str(path), text_pair_column=pair_column, on_bad_row="error")
    expected = f"{path}:{line}: {reason}; fix the row or pass --on-bad-row skip to skip such rows."
    assert str(caught.value) == expected


def test_on_bad_row_error_reads_clean_file(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\na\tpos\nb\tneg\n\n", "utf-8")
    examples = read_examples(str(path), on_bad_row="error")
    assert examples.texts == ["a", "b"]
    assert examples.skipped == {}
    assert examples.rows_read == 2


def test_on_bad_row_invalid_value(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\na\tpos\n", "utf-8")
    assert ON_BAD_ROW_CHOICES == ("skip", "error")
    with pytest.raises(ValueError, match=r"'ignore'.*'skip' or 'error'.*--on-bad-row"):
        read_examples(str(path), on_bad_row="ignore")


@pytest.mark.parametrize(
    "name, content",
    [
        ("data.tsv", "first\tsecond\tlabel\nA cat\tA dog\t0\nRain\tWet\t1\n"),
        ("data.csv", 'first,second,label\nA cat,"A dog, brown",0\nRain,Wet,1\n'),
        (
            "data.jsonl",
            '{"first": "A cat", "second": "A dog", "label": 0}\n'
            '{"first": "Rain", "second": "Wet", "label": 1}\n',
        ),
    ],
    ids=["tsv", "csv", "jsonl"],
)
def test_text_pair_column_read(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, "utf-8")
    examples = read_examples(str(path), "first", text_pair_column="second")
    assert examples.texts == ["A cat", "Rain"]
    expected_pairs = ["A dog, brown", "Wet"] if name.endswith(".csv") else ["A dog", "Wet"]
    assert examples.pairs == expected_pairs
    assert examples.labels == ["0", "1"]


def test_pairs_none_without_pair_column(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\tpair\tlabel\na\tb\tpos\n", "utf-8")
    assert read_examples(str(path)).pairs is None


@pytest.mark.parametrize("name", ["data.tsv", "data.csv", "data.jsonl"])
def test_empty_text_pair_skipped_and_counted(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        write_jsonl(
            path,
            [
                {"text": "a", "pair": "b", "label": 1},
                {"text": "c", "pair": " ", "label": 0},
                {"text": "d", "label": 0},
                {"text": "e", "pair": "f", "label": 0},
            ],
        )
    else:
        sep = "\t" if name.endswith(".tsv") else ","
        rows = [["text", "pair", "label"], ["a", "b", "1"], ["c", " ", "0"], ["d", "", "0"]]
        rows.append(["e", "f", "0"])
        path.write_text("".join(sep.join(row) + "\n" for row in rows), "utf-8")
    examples = read_examples(str(path), text_pair_column="pair")
    assert examples.texts == ["a", "e"]
    assert examples.pairs == ["b", "f"]
    assert examples.lines == [1, 4] if name.endswith(".jsonl") else [2, 5]
    assert examples.skipped == {"empty text pair": 2}
    assert examples.rows_read == 4


def test_jsonl_pair_not_a_string(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(
        path, [{"text": "a", "pair": ["x"], "label": 1}, {"text": "b", "pair": "y", "label": 0}]
    )
    examples = read_examples(str(path), text_pair_column="pair")
    assert examples.pairs == ["y"]
    assert examples.skipped == {"text pair is not a string": 1}


def test_head_keeps_pairs():
    examples = Examples("x.tsv", ["a", "b", "c"], ["1", "0", "1"], [2, 3, 4], {"empty text": 1})
    examples.pairs = ["p", "q", "r"]
    examples.rows_read = 4
    first = examples.head(2)
    assert first.texts == ["a", "b"]
    assert first.pairs == ["p", "q"]
    assert first.labels == ["1", "0"]
    assert first.lines == [2, 3]
    assert first.skipped == {"empty text": 1}
    assert first.rows_read == 4
    assert examples.head(1).pairs == ["p"]
    assert Examples("x.tsv", ["a"], ["1"], [2]).head(1).pairs is None


@pytest.mark.parametrize(
    "name, arguments, flag",
    [
        ("data.tsv", {"text_column": "sentence"}, "--text-column"),
        ("data.csv", {"label_column": "y"}, "--label-column"),
        ("data.tsv", {"text_pair_column": "sentence2"}, "--text-pair-column"),
        ("data.csv", {"text_pair_column": "sentence2"}, "--text-pair-column"),
    ],
    ids=["text", "label", "pair_tsv", "pair_csv"],
)
def test_missing_column_names_flag(tmp_path, name, arguments, flag):
    path = tmp_path / name
    sep = "\t" if name.endswith(".tsv") else ","
    path.write_text(f"text{sep}label\nhello{sep}pos\n", "utf-8")
    with pytest.raises(DataError) as caught:
        read_examples(str(path), **arguments)
    message = str(caught.value)
    missing = next(iter(arguments.values()))
    assert message.startswith(f"{path}: column {missing!r} not found")
    assert "['text', 'label']" in message
    assert flag in message


def test_duplicate_column_is_an_error(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\ttext\tlabel\na\tb\tpos\n", "utf-8")
    with pytest.raises(DataError, match="'text' appears 2 times"):
        read_examples(str(path))


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("empty.tsv", "", "empty"),
        ("blank.jsonl", "\n  \n", "blank.jsonl is empty"),
        ("no_column.tsv", "sentence\tlabel\nx\ty\n", "'text'"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{broken\n', "bad.jsonl:2: invalid JSON"),
        (
            "list.jsonl",
            '{"text": "a", "label": 1}\n["a", 1]\n',
            "list.jsonl:2: expected a JSON object",
        ),
        ("data.xml", "<a/>", "unknown file type"),
        ("only_bad.tsv", "text\tlabel\n\tpos\n", "no rows"),
        ("header_only.csv", "text,label\n", "no data rows"),
    ],
    ids=[
        "empty",
        "blank_jsonl",
        "missing_column",
        "invalid_json",
        "json_not_object",
        "unknown_type",
        "no_usable_rows",
        "header_only",
    ],
)
def test_reader_errors(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content, "utf-8")
    with pytest.raises(DataError, match=fragment) as caught:
        read_examples(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message


def test_reader_file_not_found(tmp_path):
    path = tmp_path / "missing.tsv"
    with pytest.raises(DataError, match="not found") as caught:
        read_examples(str(path))
    assert str(path) in str(caught.value)


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
    examples = read_examples(os.path.join(SHARED_DATA, path), on_bad_row="error")
    assert len(examples) == rows
    assert examples.skipped == {}
    assert examples.rows_read == rows


def test_csv_unclosed_quote_is_an_error(tmp_path):
    path = tmp_path / "data.csv"
    rows = ["text,label", "good,pos", '"unclosed quote,neg'] + [f"row {i},pos" for i in range(5)]
    path.write_text("\n".join(rows) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"data.csv:3: .*unclosed quote") as caught:
        read_examples(str(path))
    assert "\n" not in str(caught.value)


def test_jsonl_text_not_a_string(tmp_path, caplog):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": ["a"], "label": 1}\n{"text": "b", "label": 0}\n', "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ["b"]
    assert examples.skipped == {"text is not a string": 1}
    assert "line 1" in caplog.text


def test_csv_overlong_field_is_an_error(tmp_path):
    # An unclosed quote near the top swallows the rest of the file into one
    # field, which the csv module rejects once it passes its size limit.
    path = tmp_path / "data.csv"
    rows = ["text,label", "good,pos", '"unclosed,neg'] + [f"row {i},pos" for i in range(20000)]
    path.write_text("\n".join(rows) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"data.csv:3: cannot parse the row .*field limit"):
        read_examples(str(path))


def test_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_examples(str(tmp_path))
