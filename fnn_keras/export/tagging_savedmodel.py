"""Tagging SavedModel for TF Serving: token-id and raw-text signatures, tokenized in the graph."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.tokenizers.word_piece_tokenizer import CJK_REGEX

from fnn_keras.data.tagging_pipeline import SPECIAL_PIECES
from fnn_keras.export.savedmodel import next_version
from fnn_keras.models.classifier import INPUT_NAMES
from fnn_keras.tokenizer import _PUNCTUATION, _WORD_SEPARATORS

logger = logging.getLogger(__name__)


def _tag_outputs(probabilities, tag_table):
    tag_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # (batch, time)
    return {
        "probabilities": probabilities,
        "tag_ids": tag_ids,
        "tags": tf.gather(tag_table, tag_ids),
    }


def text_to_pieces(tokenizer, text: tf.Tensor, sequence_length: int) -> dict[str, tf.Tensor]:
    """Tokenize raw strings in the graph, keeping each piece's word and its byte offsets.

    Words are split as `fnn_keras.data.words.split_words` splits them
    (white space, punctuation, and single CJK characters when the
    tokenizer splits them), then each word goes through the tokenizer.
    Rows are `[CLS]`, the first `sequence_length - 2` pieces, `[SEP]`,
    padded to the batch's longest row.

    NOTE: the graph splits the original text, while `split_words` tests
    Python's `str.isspace`. The export parity check compares the ids of
    both on the parity texts only, so rare characters on which the two
    disagree may still give other words here.

    Args:
        tokenizer: The run's `HuggingFaceBertTokenizer`.
        text: `(batch,)` UTF-8 strings.
        sequence_length: Pieces per row at most, `[CLS]` and `[SEP]` included.

    Returns:
        int32 `(batch, longest)` tensors: `token_ids`, `segment_ids`,
        `padding_mask`, `first_piece` (1 at the first piece of each word),
        and `start` and `end`: the UTF-8 byte offsets in `text` of the word
        each piece belongs to, -1 at `[CLS]`, `[SEP]` and padding.

    Example:

    ```python
    pieces = text_to_pieces(tokenizer, tf.constant(["张三在北京"]), 128)
    ```
    """
    delimiters = f"{_WORD_SEPARATORS}|{_PUNCTUATION}"
    kept = _PUNCTUATION
    if tokenizer.split_on_cjk:
        delimiters += f"|{CJK_REGEX}"
        kept += f"|{CJK_REGEX}"
    words, starts, ends = tf_text.regex_split_with_offsets(
        text, delim_regex_pattern=delimiters, keep_delim_regex_pattern=kept
    )  # (batch, (words))
    word_pieces = tokenizer(words.flat_values)  # (all words, (pieces))
    pieces = tf.RaggedTensor.from_row_splits(word_pieces, words.row_splits)
    # (batch, (words), (pieces)) with the word index of every piece.
    lengths = word_pieces.row_lengths()
    # The index of each piece in its word, and the word of each piece.
    piece_index = tf.ragged.range(lengths).flat_values
    first = tf.cast(tf.equal(piece_index, 0), tf.int32)
    piece_word = tf.repeat(tf.range(tf.shape(lengths, out_type=tf.int64)[0]), lengths)
    piece_starts = tf.gather(tf.cast(starts.flat_values, tf.int32), piece_word)
    piece_ends = tf.gather(tf.cast(ends.flat_values, tf.int32), piece_word)

    def per_row(flat_values):
        nested = pieces.with_flat_values(flat_values).merge_dims(1, 2)  # (batch, (pieces))
        return nested[:, : sequence_length - SPECIAL_PIECES]

    columns = {
        "token_ids": per_row(tf.cast(word_pieces.flat_values, tf.int32)),
        "first_piece": per_row(first),
        "start": per_row(piece_starts),
        "end": per_row(piece_ends),
    }
    batch = columns["token_ids"].nrows()
    # [CLS] and [SEP] around each row, with offsets -1 and no first-piece flag.
    edges = {
        "token_ids": (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id),
        "first_piece": (0, 0, 0),
        "start": (-1, -1, -1),
        "end": (-1, -1, -1),
    }
    features = {}
    for name, values in columns.items():
        before, after, padding = edges[name]
        column = tf.concat(
            [
                tf.fill([batch, 1], tf.constant(before, tf.int32)),
                values,
                tf.fill([batch, 1], tf.constant(after, tf.int32)),
            ],
            axis=1,
        )
        features[name] = column.to_tensor(default_value=padding)
    row_lengths = columns["token_ids"].row_lengths() + SPECIAL_PIECES
    features["padding_mask"] = tf.sequence_mask(
        row_lengths, tf.shape(features["token_ids"])[1], dtype=tf.int32
    )
    features["segment_ids"] = tf.zeros_like(features["token_ids"])
    return features


def export_tagging_saved_model(run, model_dir: str, version: int | None = None) -> str:
    """Export a tagger as the next numbered SavedModel version for TF Serving.

    Signatures:

    - `predict_ids`: `token_ids`, `segment_ids` and `padding_mask`, int32
      `(batch, time)`, to `probabilities` (float32 `(batch, time, tags)`),
      `tag_ids` (int32) and `tags` (string), one per piece.
    - `serving_default`: `text`, `(batch,)` raw UTF-8 strings, tokenized
      in the graph by `text_to_pieces`, to the same three outputs plus
      `token_ids`, `padding_mask`, `first_piece` (1 at each word's first
      piece, where its tag is read) and `start`/`end` (UTF-8 byte offsets
      of each piece's word in the text, -1 at special tokens and padding).

    Args:
        run: A tagging run from `load_trained_run`.
        model_dir: `<export_dir>/<run_name>`; versions go below it.
        version: Version number; defaults to `next_version(model_dir)`.

    Returns:
        The path of the new version directory.

    Example:

    ```python
    path = export_tagging_saved_model(load_trained_run("ner"), "exported/ner")
    ```
    """
    model = run.model
    tokenizer = run.tokenizer
    sequence_length = run.sequence_length
    version = version or next_version(model_dir)
    final_path = os.path.join(model_dir, str(version))
    if os.path.exists(final_path):
        raise FileExistsError(17, "SavedModel version already exists", final_path)
    tag_table = tf.constant(run.labels, dtype=tf.string)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    id_signature = [tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]

    @tf.function(input_signature=id_signature)
    def serve_ids(token_ids, segment_ids, padding_mask):
        features = {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": padding_mask,
        }
        return _tag_outputs(model(features, training=False), tag_table)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(text):
        pieces = text_to_pieces(tokenizer, text, sequence_length)
        features = {name: pieces[name] for name in INPUT_NAMES}
        outputs = _tag_outputs(model(features, training=False), tag_table)
        extra = ("token_ids", "padding_mask", "first_piece", "start", "end")
        return outputs | {name: pieces[name] for name in extra}

    archive.add_endpoint("serving_default", serve_text)
    archive.add_endpoint("predict_ids", serve_ids)
    os.makedirs(model_dir, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir)
    try:
        archive.write_out(temporary, verbose=False)
        os.rename(temporary, final_path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("Exported tagging SavedModel version %d to %s", version, final_path)
    return final_path
