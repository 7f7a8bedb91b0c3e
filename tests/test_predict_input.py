"""Reading the texts for `python -m fnn_keras.predict`: lines, encodings, errors."""

import argparse
import io

import pytest

from fnn_keras import predict


def read(file=None, texts=()):
    return predict._read_texts(argparse.Namespace(file=file, texts=list(texts)))


def test_lines_split_only_at_newlines(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("one\u2028two\nthree\x0cfour\r\n很好\n\nlast".encode())
    assert read(str(path)) == ["one\u2028two", "three\x0cfour", "很好", "", "last"]


def test_trailing_newline_adds_no_text(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("a\nb\n", encoding="utf-8")
    assert read(str(path)) == ["a", "b"]


def test_stdin_rejects_invalid_utf8(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"good\n\xff\xfebad\n")))
    with pytest.raises(SystemExit) as exit_info:
        read()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "error: standard input: invalid UTF-8 byte 0xff at byte 5; convert it to UTF-8."
    )


def test_directory_as_file_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        read(str(tmp_path))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert str(tmp_path) in error[0]


def test_file_with_byte_order_mark(tmp_path):
    from fnn_keras import predict

    path = tmp_path / "texts.txt"
    path.write_bytes("\ufeffgood film\nbad film\n".encode())
    args = predict.build_parser().parse_args(["run", "--file", str(path)])
    assert predict._read_texts(args) == ["good film", "bad film"]
