import re

import pytest

from fnn_keras.data.readers import DataError, read_examples

# Rows before the non-ASCII one, so the bad byte sits on line 3.
LEADING_ROWS = {
    "tsv": "text\tlabel\nplain\tpos\n",
    "csv": "text,label\nplain,pos\n",
    "jsonl": '{"text": "first", "label": "pos"}\n{"text": "plain", "label": "pos"}\n',
}


def non_ascii_row(fmt, text):
    if fmt == "tsv":
        return f"{text}\tneg\n"
    if fmt == "csv":
        return f"{text},neg\n"
    return f'{{"text": "{text}", "label": "neg"}}\n'


@pytest.mark.parametrize(
    "fmt, text, encoding, first_byte, offset",
    [
        # The offsets count the leading rows (21 bytes in TSV and CSV, 68 in
        # JSON Lines), then `{"text": "` (10 bytes) in JSON Lines, then "Gr".
        ("tsv", "Größe", "latin-1", 0xF6, 23),
        ("csv", "Größe", "latin-1", 0xF6, 23),
        ("jsonl", "Größe", "latin-1", 0xF6, 80),
        ("tsv", "这部电影很好看", "gb18030", 0xD5, 21),
        ("csv", "这部电影很好看", "gb18030", 0xD5, 21),
        ("jsonl", "这部电影很好看", "gb18030", 0xD5, 78),
    ],
    ids=["latin1_tsv", "latin1_csv", "latin1_jsonl", "gb18030_tsv", "gb18030_csv", "gb18030_jsonl"],
)
def test_non_utf8_file_fails_by_default(tmp_path, fmt, text, encoding, first_byte, offset):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes((LEADING_ROWS[fmt] + non_ascii_row(fmt, text)).encode(encoding))
    with pytest.raises(DataError) as caught:
        read_examples(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert f"byte {first_byte:#04x}" in message
    assert f"byte offset {offset} (0-based)" in message
    assert "'utf-8'" in message
    assert "--encoding" in message
    assert "\n" not in message


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
@pytest.mark.parametrize(
    "text, encoding",
    [("Größe", "latin-1"), ("这部电影很好看", "gb18030")],
    ids=["latin1", "gb18030"],
)
def test_non_utf8_file_reads_with_encoding(tmp_path, fmt, text, encoding):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes((LEADING_ROWS[fmt] + non_ascii_row(fmt, text)).encode(encoding))
    examples = read_examples(str(path), encoding=encoding)
    assert examples.texts[-1] == text
    assert examples.labels[-1] == "neg"
    assert examples.lines[-1] == 3


def test_gbk_file_fails_as_utf8(tmp_path):
    path = tmp_path / "gbk.tsv"
    path.write_bytes("text\tlabel\n好\t1\n".encode("gbk"))
    with pytest.raises(DataError, match=r"gbk.tsv:2: cannot decode byte 0xba at byte offset 11"):
        read_examples(str(path))


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_decode_error_line_with_other_line_endings(tmp_path, newline):
    path = tmp_path / "data.tsv"
    lines = ["text\tlabel", "a\tpos", "b\tneg", "Größe\tpos"]
    path.write_bytes(newline.join(lines).encode("latin-1"))
    with pytest.raises(DataError, match=r"data.tsv:4: cannot decode byte 0xf6"):
        read_examples(str(path))


def test_decode_error_points_to_utf16(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_bytes("text\tlabel\nhello\tpos\n".encode("utf-16"))
    with pytest.raises(DataError, match="byte offset 0 .*--encoding utf-16"):
        read_examples(str(path))
    examples = read_examples(str(path), encoding="utf-16")
    assert examples.texts == ["hello"]
    assert examples.labels == ["pos"]


@pytest.mark.parametrize("encoding", ["no-such-codec", "base64"])
def test_unknown_encoding(tmp_path, encoding):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\na\tpos\n", "utf-8")
    with pytest.raises(
        DataError, match=re.escape(f"{path}: '{encoding}' is not a known text encoding")
    ):
        read_examples(str(path), encoding=encoding)


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize("sep", ["\t", ","], ids=["tsv", "csv"])
def test_bom_and_line_endings_delimited(tmp_path, sep, newline):
    path = tmp_path / ("data.tsv" if sep == "\t" else "data.csv")
    lines = [f"text{sep}label", f"good{sep}pos", f"bad{sep}neg", ""]
    path.write_bytes(("\ufeff" + newline.join(lines)).encode("utf-8"))
    examples = read_examples(str(path))
    assert examples.texts == ["good", "bad"]
    assert examples.labels == ["pos", "neg"]
    assert examples.lines == [2, 3]
    assert examples.rows_read == 2


@pytest.mark.parametrize("sep", ["\t", ","], ids=["tsv", "csv"])
def test_bom_before_requested_first_column(tmp_path, sep):
    # The mark sits right before "label", the column looked up by name.
    path = tmp_path / ("data.tsv" if sep == "\t" else "data.csv")
    path.write_bytes(f"\ufefflabel{sep}text\r\npos{sep}fine\r\n".encode())
    examples = read_examples(str(path))
    assert examples.texts == ["fine"]
    assert examples.labels == ["pos"]


def test_bom_and_crlf_with_pair_column(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_bytes("\ufefftext\tlabel\tpair\r\nA\tpos\tB\r\n".encode())
    examples = read_examples(str(path), text_pair_column="pair")
    assert examples.pairs == ["B"]
    assert examples.labels == ["pos"]


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_jsonl_bom_and_line_endings(tmp_path, newline):
    path = tmp_path / "data.jsonl"
    lines = ['{"text": "good", "label": "pos"}', '{"text": "bad", "label": 0}', ""]
    path.write_bytes(("\ufeff" + newline.join(lines)).encode("utf-8"))
    examples = read_examples(str(path))
    assert examples.texts == ["good", "bad"]
    assert examples.labels == ["pos", "0"]
    assert examples.lines == [1, 2]


@pytest.mark.parametrize("encoding", ["gb18030", "utf-16-le", "utf-8-sig"])
def test_bom_stripped_with_other_encodings(tmp_path, encoding):
    path = tmp_path / "data.csv"
    path.write_bytes("\ufefftext,label\n好看,1\n".encode(encoding))
    examples = read_examples(str(path), encoding=encoding)
    assert examples.texts == ["好看"]
    assert examples.labels == ["1"]


def test_unicode_line_separators_stay_in_text(tmp_path):
    # U+2028 and U+0085 are line breaks to str.splitlines but not to TSV.
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\none\u2028two\x85three\tpos\nnext\tneg\n", "utf-8")
    examples = read_examples(str(path))
    assert examples.texts == ["one\u2028two\x85three", "next"]
    assert examples.lines == [2, 3]
