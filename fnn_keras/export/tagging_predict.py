"""Entities in raw texts from a trained tagging run, with character offsets."""

from __future__ import annotations

import os

import yaml

from fnn_keras.data.tagging_pipeline import align_sentences, log_alignment, word_tags
from fnn_keras.data.words import split_words
from fnn_keras.evaluation.entities import bio_spans
from fnn_keras.export.trained_run import TrainedRun
from fnn_keras.models.tagger import tag_probabilities


def predict_entities(run: TrainedRun, texts: list[str], batch_size: int = 32) -> list[dict]:
    """Find the entities of each raw text with a tagging run's Keras model.

    Each text is split into words by `split_words` (white space,
    punctuation and, when the run's tokenizer splits them, single CJK
    characters), each word is tokenized into pieces, and a word's tag is
    the one predicted at its first piece. Entities are the BIO spans of the
    word tags. Words past `sequence_length - 2` pieces are tagged `O` and
    counted in a logged warning.

    Args:
        run: A tagging run from `load_trained_run`.
        texts: The texts.
        batch_size: Texts per forward pass.

    Returns:
        One dict per text: `{"text": ..., "entities": [{"type", "text",
        "start", "end"}, ...]}`, where `start` and `end` are character
        offsets into the text, `end` exclusive, so
        `text[start:end] == entity["text"]`.

    Example:

    ```python
    predict_entities(load_trained_run("ner-run"), ["张三在北京工作"])
    # [{"text": "张三在北京工作", "entities": [{"type": "NAME", "text": "张三", ...}]}]
    ```
    """
    words = [split_words(text, run.tokenizer.split_on_cjk) for text in texts]
    aligned = align_sentences(
        run.tokenizer, [[word.text for word in row] for row in words], run.sequence_length
    )
    log_alignment("input texts", aligned, run.sequence_length)
    probabilities = tag_probabilities(run.model, aligned.features(), batch_size)
    tags = word_tags(probabilities.argmax(axis=-1), aligned, run.labels)

    results = []
    for text, row, row_tags in zip(texts, words, tags, strict=True):
        entities = []
        for entity_type, first, end in bio_spans(row_tags):
            start, stop = row[first].start, row[end - 1].end
            entities.append(
                {"type": entity_type, "text": text[start:stop], "start": start, "end": stop}
            )
        results.append({"text": text, "entities": entities})
    return results


def tagging_run_dir(artifact: str, export_dir: str) -> str | None:
    """Return the run directory of `artifact` when it names a tagging run, else `None`.

    `artifact` is a run name under `export_dir`, a run directory or a
    run's `model.keras`. Only the run's `config.yaml` is read, so other
    artifacts (SavedModels, `.tflite` and `.onnx` files) and unreadable
    configs give `None`.

    Example:

    ```python
    tagging_run_dir("ner-run", "exported")  # "exported/ner-run"
    ```
    """
    if artifact.endswith(".keras"):
        candidates = [os.path.dirname(os.path.abspath(artifact))]
    else:
        candidates = [artifact, os.path.join(export_dir, artifact)]
    for directory in candidates:
        config_path = os.path.join(directory, "config.yaml")
        if not os.path.isfile(config_path):
            continue
        try:
            with open(config_path, encoding="utf-8") as file:
                values = yaml.safe_load(file)
        except (OSError, yaml.YAMLError):
            return None
        data = values.get("data") if isinstance(values, dict) else None
        task = data.get("task") if isinstance(data, dict) else None
        return directory if task == "tagging" else None
    return None
