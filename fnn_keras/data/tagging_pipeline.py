"""Word pieces for token tagging: each word's tag on its first piece, batched in `tf.data`."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from fnn_keras.data.pipeline import trim_batch

logger = logging.getLogger(__name__)

# Pieces of one sentence that go to the model besides its words' pieces.
SPECIAL_PIECES = 2  # [CLS] and [SEP]


@dataclasses.dataclass
class AlignedSentences:
    """Sentences as fixed-length model inputs, with each word's first piece marked.

    Row `i` contains sentence `i`: `[CLS]`, the pieces of its words in order,
    `[SEP]`, then padding. Arrays are `(sentences, sequence_length)`.

    Attributes:
        token_ids: int32 piece ids.
        segment_ids: int32 zeros, as every piece is in the first segment.
        padding_mask: int32, 1 at `[CLS]`, the pieces and `[SEP]`.
        tag_ids: int32 tag id of each word on its first piece, 0 elsewhere.
        weights: float32, 1 at each word's first piece and 0 elsewhere, so
            the loss and metrics see one position per word.
        word_positions: For each sentence, an int array with the position
            of each word's first piece, or -1 for a word without pieces
            (the tokenizer removed all its characters) or a word cut off by
            truncation.
        truncated_sentences: Sentences longer than `sequence_length - 2`
            pieces, whose last words were cut off.
        truncated_words: Words cut off by truncation, over all sentences.
        words_without_pieces: Words for which the tokenizer gave no piece.
    """

    token_ids: np.ndarray
    segment_ids: np.ndarray
    padding_mask: np.ndarray
    tag_ids: np.ndarray
    weights: np.ndarray
    word_positions: list[np.ndarray]
    truncated_sentences: int = 0
    truncated_words: int = 0
    words_without_pieces: int = 0

    def __len__(self) -> int:
        return len(self.token_ids)

    def features(self) -> dict[str, np.ndarray]:
        """Return the model inputs, `token_ids`, `segment_ids` and `padding_mask`."""
        return {
            "token_ids": self.token_ids,
            "segment_ids": self.segment_ids,
            "padding_mask": self.padding_mask,
        }


def word_piece_ids(tokenizer, words: list[str], batch_size: int = 4096) -> list[list[int]]:
    """Tokenize each word on its own into WordPiece ids.

    Args:
        tokenizer: A `HuggingFaceBertTokenizer` without a sequence length.
        words: The words.
        batch_size: Words per tokenizer call.

    Returns:
        The piece ids of each word; an empty list for a word the tokenizer
        removes entirely, such as a zero-width space.

    Example:

    ```python
    word_piece_ids(tokenizer, ["北", "good", "films"])  # [[...], [...], [..., ...]]
    ```
    """
    pieces = []
    for first in range(0, len(words), batch_size):
        ids = tokenizer(tf.constant(words[first : first + batch_size]))
        # keras-hub returns Python lists from eager calls, a ragged tensor in graphs.
        pieces += ids.to_list() if isinstance(ids, tf.RaggedTensor) else [list(row) for row in ids]
    return pieces


def align_sentences(
    tokenizer,
    sentences: list[list[str]],
    sequence_length: int,
    tag_ids: list[list[int]] | None = None,
) -> AlignedSentences:
    """Tokenize words into pieces and put each word's tag on its first piece.

    A word may become several pieces ("films" into "film", "##s"), and
    only the first one carries the word's tag and a loss weight. The
    other pieces, `[CLS]`, `[SEP]` and padding carry weight 0. A sentence
    with more than `sequence_length - 2` pieces keeps its first
    `sequence_length - 2` pieces, so the words after them get no
    position. Those words are counted in `truncated_words`, and words
    the tokenizer removes entirely in `words_without_pieces`.

    Args:
        tokenizer: A `HuggingFaceBertTokenizer` without a sequence length.
        sentences: The words of each sentence.
        sequence_length: Pieces per row, `[CLS]` and `[SEP]` included.
        tag_ids: The tag id of each word of each sentence, or `None` (for
            prediction) to leave `tag_ids` 0 everywhere.

    Returns:
        The `AlignedSentences`.

    Example:

    ```python
    aligned = align_sentences(tokenizer, [["张", "三"]], 16, [[1, 2]])
    aligned.weights[0, :4]  # [0, 1, 1, 0]
    ```
    """
    count = len(sentences)
    shape = (count, sequence_length)
    token_ids = np.full(shape, tokenizer.pad_token_id, np.int32)
    padding_mask = np.zeros(shape, np.int32)
    tags = np.zeros(shape, np.int32)
    weights = np.zeros(shape, np.float32)
    flat = word_piece_ids(tokenizer, [word for words in sentences for word in words])

    aligned = AlignedSentences(
        token_ids, np.zeros(shape, np.int32), padding_mask, tags, weights, []
    )
    room = sequence_length - SPECIAL_PIECES
    next_word = 0
    for row, words in enumerate(sentences):
        positions = np.full(len(words), -1, np.int64)
        pieces = [tokenizer.cls_token_id]
        cut = False
        for index in range(len(words)):
            word_pieces = flat[next_word + index]
            if not word_pieces:
                aligned.words_without_pieces += 1
                continue
            used = len(pieces) - 1
            if used >= room:
                aligned.truncated_words += 1
                cut = True
                continue
            positions[index] = len(pieces)
            if tag_ids is not None:
                tags[row, len(pieces)] = tag_ids[row][index]
            weights[row, len(pieces)] = 1.0
            kept = word_pieces[: room - used]
            # The last word keeps its first pieces when the rest do not fit.
            cut = cut or len(kept) < len(word_pieces)
            pieces += kept
        next_word += len(words)
        pieces.append(tokenizer.sep_token_id)
        token_ids[row, : len(pieces)] = pieces
        padding_mask[row, : len(pieces)] = 1
        aligned.truncated_sentences += cut
        aligned.word_positions.append(positions)
    return aligned


def log_alignment(name: str, aligned: AlignedSentences, sequence_length: int) -> None:
    """Log how many sentences were truncated and how many words got no position."""
    if aligned.truncated_sentences:
        logger.warning(
            "%s: %d of %d sentences are longer than %d word pieces and were truncated; "
            "%d word(s) after the cut get no position (no loss in training, tag O in "
            "predictions). Train with a larger --sequence-length to keep them.",
            name,
            aligned.truncated_sentences,
            len(aligned),
            sequence_length - SPECIAL_PIECES,
            aligned.truncated_words,
        )
    if aligned.words_without_pieces:
        logger.warning(
            "%s: the tokenizer removed %d word(s) entirely (such as control or zero-width "
            "characters); they get no position (no loss in training, tag O in predictions).",
            name,
            aligned.words_without_pieces,
        )


def tagging_dataset(
    aligned: AlignedSentences,
    batch_size: int,
    shuffle_seed: int | None = None,
    pad_to_multiple: int = 1,
) -> tf.data.Dataset:
    """Batch aligned sentences as `(features, tag_ids, weights)` for `fit` and `evaluate`.

    Each batch is cut to its longest row, so a batch of short sentences
    costs little. All tensors are int32 except the float32 weights; the
    padding mask is int32 because bool masks fail under
    `MirroredStrategy` with several replicas.

    Args:
        aligned: The `AlignedSentences`.
        batch_size: The global batch size.
        shuffle_seed: Shuffle the sentences again at each epoch from this
            seed, or `None` to keep their order.
        pad_to_multiple: Round each batch's length up to a multiple of
            this (at most the sequence length), so XLA compiles fewer shapes.

    Returns:
        The `tf.data.Dataset`, with the last batch smaller when the count
        does not divide evenly.

    Example:

    ```python
    data = tagging_dataset(aligned, batch_size=32, shuffle_seed=0)
    ```
    """
    columns = (aligned.features(), aligned.tag_ids, aligned.weights)
    data = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
        data = data.shuffle(len(aligned), seed=shuffle_seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)

    def trim(features, tags, weights):
        trimmed = trim_batch(features, pad_to_multiple)
        length = tf.shape(trimmed["token_ids"])[1]
        return trimmed, tags[:, :length], weights[:, :length]

    return data.map(trim, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def word_tags(
    piece_tag_ids: np.ndarray, aligned: AlignedSentences, labels: list[str]
) -> list[list[str]]:
    """Read each word's tag from the tag id predicted at its first piece.

    Args:
        piece_tag_ids: `(sentences, time)` predicted tag ids, `time` at
            most `sequence_length`.
        aligned: The `AlignedSentences` the predictions are for.
        labels: Tag names in id order; `labels[0]` is `O`.

    Returns:
        The tags of each sentence's words. A word without a position
        (removed by the tokenizer or cut off) gets `labels[0]`.

    Example:

    ```python
    word_tags(np.argmax(probabilities, -1), aligned, vocabulary.labels)
    ```
    """
    sentences = []
    for row, positions in enumerate(aligned.word_positions):
        sentences.append(
            [labels[piece_tag_ids[row, p]] if p >= 0 else labels[0] for p in positions]
        )
    return sentences
