"""The tokenizer: Hugging Face BERT's ids from TensorFlow ops, and its files for clients.

This module is the one place that decides how text becomes token ids: the
tokenizer class, its settings and the files that clients read.
"""

from __future__ import annotations

import json
import os

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.tokenizers.word_piece_tokenizer import CJK_REGEX
from keras_hub.src.utils.tensor_utils import preprocessing_function


class TokenizerError(ValueError):
    """Raised when tokenizer files are missing or invalid."""


# The patterns below are RE2 syntax, for `tf.strings` and TensorFlow Text.
# They reproduce the character classes of `BasicTokenizer` in Hugging Face
# transformers 5.25, where a class is a Python `unicodedata` category.

# Characters BasicTokenizer removes first: NUL, U+FFFD, and every category C
# character except tab, newline and carriage return. Category C is control
# (Cc), format (Cf: zero-width space and joiner, soft hyphen, byte order
# mark), private use (Co) and unassigned. RE2 has no class for unassigned
# code points, so the last pattern matches what is in no other category.
_REMOVED_CHARACTERS = "|".join(
    [
        r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]",
        r"\p{Cf}",
        r"\p{Co}",
        r"\x{fffd}",
        r"[^\p{L}\p{M}\p{N}\p{P}\p{S}\p{Z}\p{C}]",
    ]
)
# NOTE: which code points are unassigned depends on the Unicode version.
# Python 3.11 has Unicode 14, so Hugging Face's tokenizer there removes the
# characters Unicode 15 added (CJK Extension H, U+31350-U+323AF, U+0CF3),
# while TensorFlow's RE2 keeps them and they become [UNK]. Python 3.12 and
# later have Unicode 15 or newer.
# Characters BasicTokenizer turns into a space: tab, newline, carriage return
# and the space separators (Zs), such as U+00A0 and U+3000.
_SPACE_CHARACTERS = r"[\t\n\r\p{Zs}]"
# The characters Python's `str.split()` splits on, as BasicTokenizer splits
# words with it. After the cleanup only " ", U+2028 and U+2029 remain.
_WORD_SEPARATORS = (
    r"[\t-\r\x1c-\x20\x85\xa0\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
# Punctuation: every ASCII character that is not a letter, digit, space or
# control character, and Unicode category P. Each one becomes its own word.
_PUNCTUATION = r"[!-/:-@\[-`{-~]|\p{P}"

MAX_CHARACTERS_PER_WORD = 100
# FastWordpieceTokenizer counts bytes, and UTF-8 takes at most 4 per
# character, so no word within the character limit reaches this.
_MAX_BYTES_PER_WORD = 4 * MAX_CHARACTERS_PER_WORD


@keras.saving.register_keras_serializable(package="fnn_keras")
class HuggingFaceBertTokenizer(keras_hub.models.BertTokenizer):
    """keras-hub `BertTokenizer` that gives the ids of Hugging Face's `BertTokenizer`.

    BERT checkpoints on the Hugging Face Hub come with the settings of
    Hugging Face's BERT tokenizer, `BasicTokenizer` followed by WordPiece
    (`BertTokenizerLegacy` in transformers 5.25). keras-hub 0.32's
    `BertTokenizer` gives other ids for some text. Its lowercasing is NFKC
    case folding, which turns the full-width "，" into "," and "ß" into
    "ss". It splits words on ASCII whitespace only, so "good film" with a
    no-break space (U+00A0) is one unknown word. It drops zero-width
    characters after splitting, so "goodfilm" with a zero-width space
    (U+200B) inside gives "film" where Hugging Face gives "##film". And its
    eager (pure Python) path and its graph path disagree on some control
    characters.

    This class runs the steps of Hugging Face's tokenizer with TensorFlow
    and TensorFlow Text ops, both eagerly and in graphs:

    1. Remove NUL, U+FFFD and control, format, private-use and unassigned
       characters. Turn tabs, newlines and space separators into spaces.
    2. With `split_on_cjk`, put spaces around each CJK ideograph.
    3. Normalize to NFC.
    4. With `lowercase`, lowercase with the full Unicode mapping of
       Python's `str.lower`.
    5. With `strip_accents`, normalize to NFD and remove nonspacing marks.
    6. Split on whitespace and punctuation, with each punctuation
       character a word of its own.
    7. Split each word into WordPiece tokens. A word of more than 100
       characters, or one the vocabulary cannot cover, is the unknown token.

    Note: special tokens written in the text, such as "[SEP]", are split
    like other text, so user text cannot insert them. Hugging Face's
    tokenizer maps them to the special token ids instead.

    Args:
        vocabulary: list of str or str. The WordPiece tokens, or the path of
            a `vocab.txt` with one token per line.
        lowercase: bool. Whether to lowercase the text. Defaults to `False`.
        strip_accents: bool. Whether to remove accents. Defaults to `False`.
        split_on_cjk: bool. Whether each CJK ideograph is a word. Defaults
            to `True`.
        **kwargs: Other arguments of `keras_hub.models.BertTokenizer`.
            `split=False` and `special_tokens_in_strings=True` are not
            supported.

    Example:

    ```python
    tokenizer = HuggingFaceBertTokenizer(tiny_vocabulary(), lowercase=True, strip_accents=True)
    tokenizer(["A GOOD film"])  # the ids of ["a", "good", "film"]
    ```
    """

    def __init__(
        self,
        vocabulary=None,
        lowercase=False,
        strip_accents=False,
        split_on_cjk=True,
        **kwargs,
    ):
        if not kwargs.get("split", True):
            raise ValueError(
                "HuggingFaceBertTokenizer always splits the text into words. "
                "Received: split=False. Use keras_hub.models.BertTokenizer "
                "for text split beforehand."
            )
        if kwargs.get("special_tokens_in_strings", False):
            raise ValueError(
                "HuggingFaceBertTokenizer tokenizes special tokens in the text like "
                "other text. Received: special_tokens_in_strings=True. Remove "
                "the argument."
            )
        super().__init__(
            vocabulary=vocabulary,
            lowercase=lowercase,
            strip_accents=strip_accents,
            split_on_cjk=split_on_cjk,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        # keras-hub 0.32's `WordPieceTokenizer.get_config` leaves it out.
        config["split_on_cjk"] = self.split_on_cjk
        return config

    def _set_vocabulary_tf(self):
        # keras-hub's own limit is 100 bytes per word. `_tokenize_tf`
        # applies Hugging Face's 100 characters before this runs.
        self._fast_word_piece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocabulary,
            token_out_type=self.compute_dtype,
            suffix_indicator=self.suffix_indicator,
            max_bytes_per_word=_MAX_BYTES_PER_WORD,
            unknown_token=self.oov_token,
            no_pretokenization=True,
            support_detokenization=True,
        )

    def _use_tf_workflow(self):
        # keras-hub tokenizes eager calls with separate Python code, which
        # gives other ids for some text, so eager calls run the TF ops too.
        return True

    def _split_words(self, text):
        # Invalid UTF-8 becomes U+FFFD, which the cleanup removes, as for a
        # client that decodes bytes with errors="replace".
        text = tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        text = tf.strings.regex_replace(text, _REMOVED_CHARACTERS, "")
        text = tf.strings.regex_replace(text, _SPACE_CHARACTERS, " ")
        if self.split_on_cjk:
            text = tf.strings.regex_replace(text, CJK_REGEX, r" \0 ")
        text = tf_text.normalize_utf8(text, "NFC")
        if self.lowercase:
            # Core TensorFlow's ICU lowercasing is the mapping of `str.lower`,
            # final sigma included. TF Text's case_fold_utf8 would also apply
            # NFKC, which turns "，" into ",".
            text = tf.strings.lower(text, encoding="utf-8")
        if self.strip_accents:
            text = tf_text.normalize_utf8(text, "NFD")
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        return tf_text.regex_split(
            text,
            delim_regex_pattern=f"{_WORD_SEPARATORS}|{_PUNCTUATION}",
            keep_delim_regex_pattern=_PUNCTUATION,
        )

    @preprocessing_function
    def _tokenize_tf(self, inputs):
        self._maybe_initialized_tf()
        if not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        if unbatched:
            inputs = tf.expand_dims(inputs, 0)

        words = self._split_words(inputs)  # (batch, (words))
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_CHARACTERS_PER_WORD
        words = words.with_flat_values(tf.where(too_long, self.oov_token, words.flat_values))
        tokens = self._fast_word_piece.tokenize(words)  # (batch, (words), (pieces))
        tokens = tokens.merge_dims(-2, -1)

        if self.sequence_length:
            output_shape = tokens.shape.as_list()
            output_shape[-1] = self.sequence_length
            tokens = tokens.to_tensor(shape=output_shape)
        if unbatched:
            tokens = tf.squeeze(tokens, 0)
        return tokens


TOKENIZER_SETTINGS = "tokenizer.json"
VOCABULARY_FILE = "vocab.txt"


def save_tokenizer(
    tokenizer, directory: str, sequence_length: int, text_pair: bool = False
) -> None:
    """Write a tokenizer's vocabulary and settings for clients and reloads.

    The directory gets `vocab.txt` (one WordPiece token per line, line `i`
    is id `i`) and `tokenizer.json` with the settings a client needs to
    reproduce the ids: lowercasing, accent stripping, CJK splitting, the
    word length limit, the sequence length and the special token ids. The
    steps are those of Hugging Face's `BertTokenizer` (`BasicTokenizer` and
    WordPiece) with `do_lower_case`, `strip_accents` and
    `tokenize_chinese_chars` set from these settings, as
    `HuggingFaceBertTokenizer` describes.

    Args:
        tokenizer: A `HuggingFaceBertTokenizer`.
        directory: Destination directory, created if missing.
        sequence_length: Tokens per text, `[CLS]` and `[SEP]` included.
        text_pair: The model reads sentence pairs, `[CLS] text [SEP] pair
            [SEP]`, with segment id 1 on the pair's tokens and its `[SEP]`.

    Example:

    ```python
    save_tokenizer(bundle.tokenizer, "exported/run/tokenizer", 128)
    ```
    """
    os.makedirs(directory, exist_ok=True)
    vocabulary = tokenizer.get_vocabulary()
    with open(os.path.join(directory, VOCABULARY_FILE), "w", encoding="utf-8") as file:
        file.write("\n".join(vocabulary) + "\n")
    settings = {
        "vocabulary": VOCABULARY_FILE,
        "lowercase": bool(tokenizer.lowercase),
        "strip_accents": bool(tokenizer.strip_accents),
        "split_on_cjk": bool(tokenizer.split_on_cjk),
        "max_characters_per_word": MAX_CHARACTERS_PER_WORD,
        "sequence_length": int(sequence_length),
        "text_pair": bool(text_pair),
        "truncation": "keep the first sequence_length - 2 word pieces",
        "cls_token_id": int(tokenizer.cls_token_id),
        "sep_token_id": int(tokenizer.sep_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
        "unknown_token": tokenizer.oov_token,
    }
    with open(os.path.join(directory, TOKENIZER_SETTINGS), "w", encoding="utf-8") as file:
        json.dump(settings, file, ensure_ascii=False, indent=2)


def load_tokenizer(directory: str):
    """Rebuild the tokenizer written by `save_tokenizer`.

    `max_characters_per_word` in `tokenizer.json` is not read: it tells
    clients the fixed limit of 100, and files written without it load too.

    Args:
        directory: Directory holding `vocab.txt` and `tokenizer.json`.

    Returns:
        A tuple `(tokenizer, sequence_length)`.

    Raises:
        TokenizerError: A file is missing or invalid.

    Example:

    ```python
    tokenizer, sequence_length = load_tokenizer("exported/run/tokenizer")
    ```
    """
    settings_path = os.path.join(directory, TOKENIZER_SETTINGS)
    try:
        with open(settings_path, encoding="utf-8") as file:
            settings = json.load(file)
        vocabulary = os.path.join(directory, settings["vocabulary"])
        tokenizer = HuggingFaceBertTokenizer(
            vocabulary=vocabulary,
            lowercase=settings["lowercase"],
            strip_accents=settings["strip_accents"],
            # Files written before CJK splitting was a setting always split.
            split_on_cjk=settings.get("split_on_cjk", True),
        )
        sequence_length = int(settings["sequence_length"])
    except (OSError, ValueError, KeyError) as error:
        raise TokenizerError(f"Invalid tokenizer files in {directory}: {error}") from error
    return tokenizer, sequence_length


def reads_text_pairs(directory: str) -> bool:
    """Return whether the tokenizer files in `directory` belong to a sentence-pair model.

    Files written before pairs existed have no `text_pair` setting and
    belong to single-text models.

    Raises:
        TokenizerError: `tokenizer.json` is missing or invalid.

    Example:

    ```python
    reads_text_pairs("exported/run/tokenizer")  # False
    ```
    """
    try:
        with open(os.path.join(directory, TOKENIZER_SETTINGS), encoding="utf-8") as file:
            return bool(json.load(file).get("text_pair", False))
    except (OSError, ValueError, AttributeError) as error:
        raise TokenizerError(f"Invalid tokenizer files in {directory}: {error}") from error
