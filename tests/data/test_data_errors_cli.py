"""Data errors through `python -m fnn_keras.train`: exit code 2, one line, no traceback."""

import os

import pytest

from conftest import SMALL_DEV, SMALL_TRAIN, assert_one_line_error, write_tsv
from fnn_keras import train as train_cli


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as raised:
        train_cli.main(["--backbone", "tiny", "--quiet", *args])
    return raised.value.code, capsys.readouterr().err


def _files(tmp_path, train_rows=SMALL_TRAIN, dev_rows=SMALL_DEV):
    return (
        write_tsv(tmp_path / "train.tsv", train_rows),
        write_tsv(tmp_path / "dev.tsv", dev_rows),
    )


def _encoded_file(tmp_path, name, rows, encoding):
    path = tmp_path / name
    lines = ["text\tlabel"] + ["\t".join(row) for row in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return str(path)


@pytest.mark.parametrize(
    "text, encoding, offset",
    [
        ("Größe matters", "latin-1", len("text\tlabel\ngood\tpos\n") + 2),
        ("这部电影很好看", "gb18030", 20),
    ],
    ids=["latin-1", "gb18030"],
)
def test_undecodable_file_names_line_offset_and_encoding(tmp_path, capsys, text, encoding, offset):
    train = _encoded_file(
        tmp_path, "train.tsv", [("good", "pos"), (text, "neg"), ("bad", "neg")], encoding
    )
    code, err = run_cli(["--train", train, "--dev", train], capsys)
    assert code == 2
    assert_one_line_error(err, "train.tsv", "3", f"byte offset {offset}", "--encoding")
    assert "export" not in os.listdir(tmp_path)


def test_unclosed_csv_quote(tmp_path, capsys):
    path = tmp_path / "train.csv"
    path.write_text('text,label\ngood,pos\n"never closed,neg\nbad,neg\n', "utf-8")
    code, err = run_cli(["--train", str(path), "--dev", str(path)], capsys)
    assert code == 2
    assert_one_line_error(err, "train.csv:3", "quote")


def test_bad_row_stops_with_on_bad_row_error(tmp_path, capsys):
    train, dev = _files(tmp_path, SMALL_TRAIN + [("   ", "pos")])
    code, err = run_cli(["--train", train, "--dev", dev, "--on-bad-row", "error"], capsys)
    assert code == 2
    assert_one_line_error(err, f"train.tsv:{len(SMALL_TRAIN) + 2}", "--on-bad-row")


def test_declared_label_without_rows(tmp_path, capsys):
    train, dev = _files(tmp_path)
    code, err = run_cli(["--train", train, "--dev", dev, "--labels", "neg,neutral,pos"], capsys)
    assert code == 2
    assert_one_line_error(err, "train.tsv", "'neutral'", "'neg' (", "'pos' (")


def test_class_weight_must_name_every_label(tmp_path, capsys):
    train, dev = _files(tmp_path)
    code, err = run_cli(["--train", train, "--dev", dev, "--class-weight", "neg=2"], capsys)
    assert code == 2
    assert_one_line_error(err, "--class-weight", "missing: pos")


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--encoding", "klingon"], "'klingon'"),
        (["--class-weight", "neg=-1,pos=1"], "'neg'"),
        (["--sequence-length", "129"], "128"),
    ],
    ids=["encoding", "class-weight", "sequence-length"],
)
def test_invalid_data_settings(tmp_path, capsys, flags, fragment):
    train, dev = _files(tmp_path)
    code, err = run_cli(["--train", train, "--dev", dev, *flags], capsys)
    assert code == 2
    assert_one_line_error(err, fragment)
