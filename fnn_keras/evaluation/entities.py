"""Entity-level scores of BIO tag sequences: spans, precision, recall and F1."""

from __future__ import annotations

import collections


def bio_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Extract the entities of one BIO tag sequence as `(type, start, end)` spans.

    `end` is exclusive. `B-X` starts an entity. `I-X` continues the open
    entity when that entity has type `X`, and otherwise starts a new
    entity of type `X`, as the conlleval script counts a stray `I-`. `O`
    and the end of the sequence close the open entity. A tag that is none
    of these (such as `S-X`) also closes it and starts nothing.

    Args:
        tags: Tags of one sentence, such as `["B-ORG", "I-ORG", "O"]`.

    Returns:
        The spans in order of their start.

    Example:

    ```python
    bio_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
    # [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5)]
    ```
    """
    spans = []
    open_type, open_start = None, 0
    for position, tag in enumerate(tags):
        prefix, _, entity_type = tag.partition("-")
        continues = prefix == "I" and entity_type == open_type
        if continues:
            continue
        if open_type is not None:
            spans.append((open_type, open_start, position))
            open_type = None
        if prefix in ("B", "I") and entity_type:
            open_type, open_start = entity_type, position
    if open_type is not None:
        spans.append((open_type, open_start, len(tags)))
    return spans


def _scores(correct: int, gold: int, predicted: int) -> dict:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    total = precision + recall
    f1 = 2 * precision * recall / total if total else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "entities": gold,
        "predicted_entities": predicted,
        "correct": correct,
    }


def entity_metrics(gold_tags: list[list[str]], predicted_tags: list[list[str]]) -> dict:
    """Score predicted BIO tags against the gold tags, entity by entity.

    A predicted entity is correct when a gold entity has the same type,
    start and end. Precision is correct over predicted entities, recall is
    correct over gold entities, both micro-averaged over all entities of
    all sentences, and also given per entity type. A score with a zero
    denominator is 0.

    Args:
        gold_tags: The gold tags of each sentence.
        predicted_tags: The predicted tags of each sentence, of the same
            lengths.

    Returns:
        A dict with `entity_precision`, `entity_recall`, `entity_f1`,
        `examples` (sentences), `entities` (gold entities),
        `predicted_entities`, `correct_entities`, `token_accuracy` (share
        of tokens whose tag is right) and `per_type`. `per_type` maps
        each type of a gold or predicted entity, sorted, to a dict with
        `precision`, `recall`, `f1`, `entities`, `predicted_entities` and
        `correct`.

    Raises:
        ValueError: The lists differ in length, or a sentence's two tag
            lists do.

    Example:

    ```python
    metrics = entity_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    metrics["entity_f1"]  # 0.0: the predicted span is one token short
    ```
    """
    if len(gold_tags) != len(predicted_tags):
        raise ValueError(
            f"gold and predicted tags must cover the same sentences. Received: "
            f"{len(gold_tags)} gold and {len(predicted_tags)} predicted sentences."
        )
    gold_counts = collections.Counter()
    predicted_counts = collections.Counter()
    correct_counts = collections.Counter()
    right_tokens = tokens = 0
    for index, (gold, predicted) in enumerate(zip(gold_tags, predicted_tags, strict=True)):
        if len(gold) != len(predicted):
            raise ValueError(
                f"sentence {index} has {len(gold)} gold tags and {len(predicted)} predicted "
                "tags; they must be the same length."
            )
        gold_spans = set(bio_spans(gold))
        predicted_spans = set(bio_spans(predicted))
        gold_counts.update(span[0] for span in gold_spans)
        predicted_counts.update(span[0] for span in predicted_spans)
        correct_counts.update(span[0] for span in gold_spans & predicted_spans)
        right_tokens += sum(g == p for g, p in zip(gold, predicted, strict=True))
        tokens += len(gold)

    total = _scores(
        sum(correct_counts.values()), sum(gold_counts.values()), sum(predicted_counts.values())
    )
    types = sorted(set(gold_counts) | set(predicted_counts))
    return {
        "entity_precision": total["precision"],
        "entity_recall": total["recall"],
        "entity_f1": total["f1"],
        "examples": len(gold_tags),
        "entities": total["entities"],
        "predicted_entities": total["predicted_entities"],
        "correct_entities": total["correct"],
        "token_accuracy": right_tokens / tokens if tokens else 0.0,
        "per_type": {
            name: _scores(correct_counts[name], gold_counts[name], predicted_counts[name])
            for name in types
        },
    }


def entity_report_markdown(metrics: dict, title: str) -> str:
    """Format the output of `entity_metrics` as a Markdown report with a per-type table.

    Args:
        metrics: The dict `entity_metrics` returns; other keys are ignored.
        title: The report's heading.

    Returns:
        The Markdown text.

    Example:

    ```python
    text = entity_report_markdown(entity_metrics(gold, predicted), "Dev evaluation")
    ```
    """
    lines = [
        f"# {title}",
        "",
        f"- Sentences: {metrics['examples']}",
        f"- Entity precision: {metrics['entity_precision']:.4f}",
        f"- Entity recall: {metrics['entity_recall']:.4f}",
        f"- Entity F1: {metrics['entity_f1']:.4f}",
        f"- Gold entities: {metrics['entities']}, predicted: {metrics['predicted_entities']}, "
        f"correct: {metrics['correct_entities']}",
        f"- Token accuracy: {metrics['token_accuracy']:.4f}",
        "",
        "An entity is correct when its type, first token and last token all match.",
        "",
        "| type | precision | recall | F1 | gold | predicted | correct |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_type"].items():
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
            f"{row['entities']} | {row['predicted_entities']} | {row['correct']} |"
        )
    return "\n".join(lines) + "\n"
