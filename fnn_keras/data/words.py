"""Splitting raw text into words with character offsets, as BERT's basic tokenizer splits it."""

from __future__ import annotations

import dataclasses
import unicodedata

# The CJK ideograph blocks that BERT's tokenizer makes one word per
# character, the same ranges as keras-hub's `CJK_REGEX`.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


@dataclasses.dataclass(frozen=True)
class Word:
    """A word of a text and where it is: `text[start:end] == word.text`."""

    text: str
    start: int
    end: int


def is_cjk(character: str) -> bool:
    """Return whether `character` is a CJK ideograph that BERT tokenizes on its own."""
    code = ord(character)
    return any(first <= code <= last for first, last in _CJK_RANGES)


def is_punctuation(character: str) -> bool:
    """Return whether BERT's tokenizer makes `character` a word of its own as punctuation.

    Every ASCII character that is not a letter, digit, space or control
    character counts, and so does every Unicode category P character.
    """
    code = ord(character)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(character).startswith("P")


def split_words(text: str, split_on_cjk: bool = True) -> list[Word]:
    """Split raw text into words with character offsets.

    White space separates words, and each punctuation character (and,
    with `split_on_cjk`, each CJK ideograph) is a word of its own, as in
    the basic step of BERT's tokenizer. So Chinese text becomes one word
    per character and English text one word per space-separated word, with
    punctuation apart. Offsets count Python characters (code points) of
    `text` and `end` is exclusive.

    Args:
        text: The text.
        split_on_cjk: Make each CJK ideograph a word, as the tokenizer does
            with its `split_on_cjk` setting.

    Returns:
        The words in order.

    Example:

    ```python
    [w.text for w in split_words("张三 works at Acme.")]
    # ["张", "三", "works", "at", "Acme", "."]
    ```
    """
    words = []
    start = None
    for position, character in enumerate(text):
        alone = is_punctuation(character) or (split_on_cjk and is_cjk(character))
        if character.isspace() or alone:
            if start is not None:
                words.append(Word(text[start:position], start, position))
                start = None
            if alone:
                words.append(Word(character, position, position + 1))
            continue
        if start is None:
            start = position
    if start is not None:
        words.append(Word(text[start:], start, len(text)))
    return words
