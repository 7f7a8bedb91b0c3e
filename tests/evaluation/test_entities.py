"""Tests of BIO span extraction and entity-level scores."""

import pytest

from fnn_keras.data.conll import read_conll
from fnn_keras.evaluation.entities import bio_spans, entity_metrics, entity_report_markdown


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["B-PER", "I-PER", "O"], [("PER", 0, 2)]),
        (["O", "I-ORG", "I-ORG", "O"], [("ORG", 1, 3)]),
        (["O", "B-LOC", "I-LOC"], [("LOC", 1, 3)]),
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        (["B-PER", "B-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
        (["I-PER"], [("PER", 0, 1)]),
        (["O", "O"], []),
        ([], []),
    ],
    ids=[
        "entity_then_o",
        "i_after_o_starts_entity",
        "entity_at_sentence_end",
        "adjacent_same_type",
        "adjacent_other_type",
        "i_of_other_type_starts_entity",
        "lone_i",
        "no_entity",
        "empty",
    ],
)
def test_bio_spans(tags, spans):
    assert bio_spans(tags) == spans


def test_three_sentence_file_scores(tmp_path):
    # Gold entities, (type, start, end) with end exclusive:
    #   sentence 1: NAME(0, 2), LOC(3, 5)
    #   sentence 2: ORG(1, 5), TITLE(5, 7)
    #   sentence 3: NAME(0, 1), ORG(3, 4)
    # 6 gold entities.
    path = tmp_path / "gold.conll"
    path.write_text(
        "张\tB-NAME\n三\tI-NAME\n在\tO\n北\tB-LOC\n京\tI-LOC\n工\tO\n作\tO\n\n"
        "任\tO\n华\tB-ORG\n为\tI-ORG\n公\tI-ORG\n司\tI-ORG\n经\tB-TITLE\n理\tI-TITLE\n\n"
        "John\tB-NAME\nworks\tO\nat\tO\nAcme\tB-ORG\n.\tO\n",
        encoding="utf-8",
    )
    gold = read_conll(str(path))
    predicted = [
        # NAME(0, 2) right; ORG(3, 5) has the span of LOC but the wrong type.
        ["B-NAME", "I-NAME", "O", "B-ORG", "I-ORG", "O", "O"],
        # ORG(1, 3) has the wrong boundary (gold ends at 5); TITLE(5, 7) at
        # the sentence end is missed.
        ["O", "B-ORG", "I-ORG", "O", "O", "O", "O"],
        # NAME(0, 1) missed; LOC(2, 3) spurious; ORG(3, 4) right.
        ["O", "O", "B-LOC", "B-ORG", "O"],
    ]

    metrics = entity_metrics(gold.tags, predicted)

    # 5 predicted entities, 2 correct (NAME in sentence 1, ORG in sentence 3).
    # precision = 2 / 5 = 0.4; recall = 2 / 6 = 1/3;
    # F1 = 2 * 0.4 * (1/3) / (0.4 + 1/3) = (4/15) / (11/15) = 4/11.
    assert metrics["examples"] == 3
    assert metrics["entities"] == 6
    assert metrics["predicted_entities"] == 5
    assert metrics["correct_entities"] == 2
    assert metrics["entity_precision"] == pytest.approx(0.4)
    assert metrics["entity_recall"] == pytest.approx(1 / 3)
    assert metrics["entity_f1"] == pytest.approx(4 / 11)
    # Right tags: 5 of 7, 3 of 7 and 3 of 5 tokens.
    assert metrics["token_accuracy"] == pytest.approx(11 / 19)

    per_type = metrics["per_type"]
    assert list(per_type) == ["LOC", "NAME", "ORG", "TITLE"]
    # NAME: gold 2, predicted 1, correct 1: P 1, R 1/2, F1 2/3.
    assert per_type["NAME"]["precision"] == pytest.approx(1.0)
    assert per_type["NAME"]["recall"] == pytest.approx(0.5)
    assert per_type["NAME"]["f1"] == pytest.approx(2 / 3)
    # ORG: gold 2, predicted 3, correct 1: P 1/3, R 1/2, F1 2/5.
    assert per_type["ORG"]["precision"] == pytest.approx(1 / 3)
    assert per_type["ORG"]["recall"] == pytest.approx(0.5)
    assert per_type["ORG"]["f1"] == pytest.approx(0.4)
    # LOC: gold 1, predicted 1 (the spurious one), correct 0.
    assert per_type["LOC"]["f1"] == 0.0
    assert (per_type["LOC"]["entities"], per_type["LOC"]["predicted_entities"]) == (1, 1)
    # TITLE: gold 1, predicted 0, so precision has a zero denominator.
    assert per_type["TITLE"]["precision"] == 0.0
    assert per_type["TITLE"]["recall"] == 0.0


def test_perfect_prediction_scores_one():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]

    metrics = entity_metrics(gold, gold)

    assert metrics["entity_f1"] == 1.0
    assert metrics["token_accuracy"] == 1.0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="sentence 0 has 2 gold tags and 1 predicted"):
        entity_metrics([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold and 2 predicted"):
        entity_metrics([["O"]], [["O"], ["O"]])


def test_report_has_per_type_table():
    metrics = entity_metrics([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])

    text = entity_report_markdown(metrics, "Dev")

    assert "- Entity F1: 0.6667" in text
    assert "| PER | 1.0000 | 1.0000 | 1.0000 | 1 | 1 | 1 |" in text
    assert "| LOC | 0.0000 | 0.0000 | 0.0000 | 1 | 0 | 0 |" in text
