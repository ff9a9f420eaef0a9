"""Entity metrics (seqeval strict IOB2), document span metrics, tag decoding and the metrics table."""

from __future__ import annotations

import warnings

import pytest

from resume_ner.data.document import Span
from resume_ner.training.metrics import (
    compute_metrics,
    entity_type_confusion,
    format_metrics_table,
    span_metrics,
    tags_to_spans,
)

# --- compute_metrics ---------------------------------------------------------------------------------


def test_two_of_three_entities_right_gives_exact_scores():
    gold = [["B-NAME", "I-NAME", "O", "B-EMAIL"], ["B-SKILL", "O"]]
    pred = [["B-NAME", "I-NAME", "O", "B-EMAIL"], ["O", "B-SKILL"]]
    m = compute_metrics(gold, pred)
    assert m["precision_micro"] == pytest.approx(2 / 3)
    assert m["recall_micro"] == pytest.approx(2 / 3)
    assert m["f1_micro"] == pytest.approx(2 / 3)
    assert m["per_type"]["NAME"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert m["per_type"]["SKILL"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["f1_macro"] == pytest.approx((1 + 1 + 0) / 3)


def test_micro_and_macro_differ_with_unbalanced_types():
    # NAME: 3 gold, 3 right; SKILL: 1 gold, predicted wrongly (boundary) -> P=R=0.
    gold = [["B-NAME", "O", "B-NAME", "O", "B-NAME", "O", "B-SKILL", "I-SKILL"]]
    pred = [["B-NAME", "O", "B-NAME", "O", "B-NAME", "O", "B-SKILL", "O"]]
    m = compute_metrics(gold, pred)
    assert m["precision_micro"] == pytest.approx(3 / 4)
    assert m["recall_micro"] == pytest.approx(3 / 4)
    assert m["f1_macro"] == pytest.approx(0.5)
    assert m["per_type"]["NAME"]["support"] == 3


def test_precision_and_recall_differ_when_counts_differ():
    gold = [["B-NAME", "O", "O", "O"]]
    pred = [["B-NAME", "O", "B-NAME", "O"]]
    m = compute_metrics(gold, pred)
    assert m["precision_micro"] == pytest.approx(0.5)
    assert m["recall_micro"] == pytest.approx(1.0)
    assert m["f1_micro"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_strict_mode_does_not_count_an_entity_without_begin_tag():
    # Lenient (conlleval) decoding would count I-NAME I-NAME as a NAME entity and match it; strict does not.
    gold = [["B-NAME", "I-NAME", "O"]]
    pred = [["I-NAME", "I-NAME", "O"]]
    m = compute_metrics(gold, pred)
    assert m["precision_micro"] == 0.0
    assert m["recall_micro"] == 0.0
    assert m["per_type"]["NAME"]["support"] == 1


def test_strict_mode_requires_matching_type_inside_entity():
    gold = [["B-NAME", "I-NAME"]]
    pred = [["B-NAME", "I-EMAIL"]]  # strict: a one-word NAME entity, which does not match the gold span
    m = compute_metrics(gold, pred)
    assert m["f1_micro"] == 0.0


def test_no_gold_entities_gives_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nothing = compute_metrics([["O", "O"]], [["O", "O"]])
        false_alarm = compute_metrics([["O", "O"]], [["B-NAME", "O"]])
        empty = compute_metrics([], [])
    for m in (nothing, false_alarm, empty):
        assert m["f1_micro"] == 0.0 and m["f1_macro"] == 0.0 and m["recall_micro"] == 0.0
    assert nothing["per_type"] == {} and empty["per_type"] == {}
    assert false_alarm["per_type"]["NAME"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_results_are_plain_python_numbers():
    m = compute_metrics([["B-NAME"]], [["B-NAME"]])
    assert type(m["f1_micro"]) is float
    assert type(m["per_type"]["NAME"]["support"]) is int


@pytest.mark.parametrize(
    ("gold", "pred", "message"),
    [
        ([["O"]], [["O"], ["O"]], "sequences"),
        ([["O", "O"]], [["O"]], "sequence 0"),
        ([["B-NAME"]], [["S-NAME"]], "not IOB2"),
        ([["B-"]], [["O"]], "not IOB2"),
    ],
)
def test_bad_inputs_are_reported(gold, pred, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(gold, pred)


# --- span_metrics ------------------------------------------------------------------------------------


def test_span_metrics_exact_match_and_micro_vs_macro():
    gold = [
        [Span(0, 4, "NAME"), Span(10, 20, "SKILL"), Span(30, 35, "SKILL"), Span(40, 45, "SKILL")],
        [Span(0, 5, "NAME")],
    ]
    pred = [
        [Span(0, 4, "NAME"), Span(10, 20, "SKILL"), Span(30, 36, "SKILL"), Span(40, 45, "NAME")],
        [Span(0, 5, "NAME")],
    ]
    m = span_metrics(gold, pred)
    # correct: NAME 2 (doc0 0-4, doc1 0-5), SKILL 1 (10-20); predicted: NAME 3, SKILL 2; gold: NAME 2, SKILL 3
    assert m["span_precision_micro"] == pytest.approx(3 / 5)
    assert m["span_recall_micro"] == pytest.approx(3 / 5)
    assert m["span_f1_micro"] == pytest.approx(3 / 5)
    name, skill = m["span_per_type"]["NAME"], m["span_per_type"]["SKILL"]
    assert (name["support"], name["predicted"], name["correct"]) == (2, 3, 2)
    assert (skill["support"], skill["predicted"], skill["correct"]) == (3, 2, 1)
    assert name["precision"] == pytest.approx(2 / 3) and name["recall"] == 1.0
    assert name["f1"] == pytest.approx(0.8)
    assert skill["precision"] == pytest.approx(1 / 2) and skill["recall"] == pytest.approx(1 / 3)
    assert skill["f1"] == pytest.approx(0.4)
    assert m["span_precision_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["span_recall_macro"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["span_f1_macro"] == pytest.approx((0.8 + 0.4) / 2)


def test_span_match_is_per_document():
    gold = [[Span(0, 4, "NAME")], []]
    pred = [[], [Span(0, 4, "NAME")]]  # right offsets, wrong document
    m = span_metrics(gold, pred)
    assert m["span_f1_micro"] == 0.0
    assert m["span_per_type"]["NAME"]["correct"] == 0


def test_span_macro_ignores_types_without_gold_support():
    gold = [[Span(0, 4, "NAME")]]
    pred = [[Span(0, 4, "NAME"), Span(5, 9, "EMAIL")]]
    m = span_metrics(gold, pred)
    assert m["span_f1_macro"] == 1.0  # EMAIL has no gold span: not a macro class
    assert m["span_precision_micro"] == 0.5  # ... but its false positive counts in micro
    assert m["span_per_type"]["EMAIL"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 1, "correct": 0,
    }


def test_duplicate_predictions_match_one_gold_span_only():
    m = span_metrics([[Span(0, 4, "NAME")]], [[Span(0, 4, "NAME"), Span(0, 4, "NAME")]])
    assert m["span_precision_micro"] == 0.5
    assert m["span_recall_micro"] == 1.0


def test_span_metrics_of_nothing_are_zero():
    m = span_metrics([[], []], [[], []])
    assert m["span_f1_micro"] == 0.0 and m["span_f1_macro"] == 0.0 and m["span_per_type"] == {}
    with pytest.raises(ValueError, match="documents"):
        span_metrics([[]], [])


# --- entity_type_confusion ---------------------------------------------------------------------------


def _cells(confusion):
    """``{(actual, predicted): count}`` of the non-zero cells."""
    labels = confusion["labels"]
    return {(labels[i], labels[j]): n for i, row in enumerate(confusion["matrix"]) for j, n in enumerate(row) if n}


def test_confusion_counts_right_type_wrong_type_missed_and_spurious():
    gold = [[Span(0, 8, "NAME"), Span(10, 14, "SKILL"), Span(20, 24, "COMPANY")]]
    pred = [[Span(0, 4, "NAME"), Span(10, 14, "TECH_TOOL"), Span(30, 35, "LOCATION")]]
    confusion = entity_type_confusion(gold, pred)
    assert confusion["labels"] == ["COMPANY", "LOCATION", "NAME", "SKILL", "TECH_TOOL", "O"]
    assert confusion["matrix"] == [
        [0, 0, 0, 0, 0, 1],  # COMPANY missed
        [0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],  # NAME found (a partial overlap still counts as the right type)
        [0, 0, 0, 0, 1, 0],  # SKILL predicted as TECH_TOOL
        [0, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],  # a LOCATION where there is no entity
    ]


def test_confusion_one_prediction_over_two_gold_spans_counts_once():
    gold = [[Span(0, 4, "SKILL"), Span(5, 15, "TECH_TOOL")]]
    pred = [[Span(0, 15, "SKILL")]]  # overlaps SKILL by 4 characters, TECH_TOOL by 10
    assert _cells(entity_type_confusion(gold, pred)) == {("TECH_TOOL", "SKILL"): 1, ("SKILL", "O"): 1}


def test_confusion_prefers_the_larger_overlap_then_the_earlier_prediction():
    gold = [[Span(0, 10, "NAME")]]
    assert _cells(entity_type_confusion(gold, [[Span(0, 3, "SKILL"), Span(3, 10, "NAME")]])) == {
        ("NAME", "NAME"): 1, ("O", "SKILL"): 1}
    assert _cells(entity_type_confusion(gold, [[Span(5, 10, "NAME"), Span(0, 5, "SKILL")]])) == {
        ("NAME", "SKILL"): 1, ("O", "NAME"): 1}


def test_confusion_matches_within_each_document_only():
    gold = [[Span(0, 4, "NAME")], []]
    pred = [[], [Span(0, 4, "NAME")]]
    assert _cells(entity_type_confusion(gold, pred)) == {("NAME", "O"): 1, ("O", "NAME"): 1}


def test_confusion_of_empty_documents():
    assert entity_type_confusion([], []) == {"labels": ["O"], "matrix": [[0]]}
    assert entity_type_confusion([[], []], [[], []]) == {"labels": ["O"], "matrix": [[0]]}
    only_gold = entity_type_confusion([[Span(0, 2, "NAME")], []], [[], []])
    assert only_gold == {"labels": ["NAME", "O"], "matrix": [[0, 1], [0, 0]]}
    with pytest.raises(ValueError, match="2 gold documents but 1 predicted"):
        entity_type_confusion([[], []], [[]])


# --- tags_to_spans -----------------------------------------------------------------------------------


def _words(text: str) -> list[tuple[int, int]]:
    offsets, pos = [], 0
    for word in text.split():
        start = text.index(word, pos)
        offsets.append((start, start + len(word)))
        pos = start + len(word)
    return offsets


def test_tags_to_spans_joins_words_of_an_entity():
    text = "Jane Doe  knows Python and Java"
    tags = ["B-NAME", "I-NAME", "O", "B-SKILL", "O", "B-SKILL"]
    spans = tags_to_spans(tags, _words(text), text)
    assert spans == [Span(0, 8, "NAME"), Span(16, 22, "SKILL"), Span(27, 31, "SKILL")]
    assert [text[s.start : s.end] for s in spans] == ["Jane Doe", "Python", "Java"]


def test_tags_to_spans_entity_at_the_end_and_adjacent_begin_tags():
    text = "Python Java"
    assert tags_to_spans(["B-SKILL", "B-SKILL"], _words(text), text) == [
        Span(0, 6, "SKILL"),
        Span(7, 11, "SKILL"),
    ]


def test_tags_to_spans_orphan_inside_tag_starts_a_new_entity():
    text = "at Acme Corp in Paris"
    tags = ["O", "I-COMPANY", "I-COMPANY", "O", "I-LOCATION"]
    assert tags_to_spans(tags, _words(text), text) == [Span(3, 12, "COMPANY"), Span(16, 21, "LOCATION")]


def test_tags_to_spans_type_change_inside_starts_a_new_entity():
    text = "Acme Paris"
    assert tags_to_spans(["B-COMPANY", "I-LOCATION"], _words(text), text) == [
        Span(0, 4, "COMPANY"),
        Span(5, 10, "LOCATION"),
    ]


def test_tags_to_spans_trims_edge_whitespace_and_drops_blank_entities():
    text = " Jane Doe \n  x"
    offsets = [(0, 5), (5, 10), (10, 13)]  # words carrying whitespace at their edges; the last is blank
    assert tags_to_spans(["B-NAME", "I-NAME", "B-SKILL"], offsets, text) == [Span(1, 9, "NAME")]


def test_tags_to_spans_trims_trailing_separators_and_drops_entities_without_a_letter_or_digit():
    text = "Java, SQL; C++: - Acme Corp."
    tags = ["B-SKILL", "B-SKILL", "B-SKILL", "B-SKILL", "B-COMPANY", "I-COMPANY"]
    spans = tags_to_spans(tags, _words(text), text)
    assert [text[s.start : s.end] for s in spans] == ["Java", "SQL", "C++", "Acme Corp."]  # "-" dropped, "." kept


def test_tags_to_spans_edge_cases():
    assert tags_to_spans([], [], "") == []
    assert tags_to_spans(["O", "O"], [(0, 1), (2, 3)], "a b") == []
    with pytest.raises(ValueError, match="offsets"):
        tags_to_spans(["O"], [], "a")
    with pytest.raises(ValueError, match="word 0"):
        tags_to_spans(["NAME"], [(0, 1)], "a")


def test_decoded_spans_score_perfectly_against_themselves():
    text = "Jane Doe, Python developer at Acme"
    tags = ["B-NAME", "I-NAME", "B-SKILL", "B-DESIGNATION", "O", "B-COMPANY"]
    spans = tags_to_spans(tags, _words(text), text)
    assert [text[s.start : s.end] for s in spans] == ["Jane Doe", "Python", "developer", "Acme"]
    m = span_metrics([spans], [spans])
    assert m["span_f1_micro"] == 1.0 and m["span_f1_macro"] == 1.0


# --- format_metrics_table ----------------------------------------------------------------------------


def test_table_has_every_type_and_average_rows():
    gold = [["B-NAME", "O", "B-EMAIL", "O", "B-SKILL"]]
    pred = [["B-NAME", "O", "B-EMAIL", "O", "O"]]
    metrics = {
        **compute_metrics(gold, pred),
        **span_metrics([[Span(0, 4, "NAME")]], [[Span(0, 4, "NAME"), Span(9, 12, "TECH_TOOL")]]),
    }
    table = format_metrics_table(metrics)
    lines = table.splitlines()
    for etype in ("NAME", "EMAIL", "SKILL", "TECH_TOOL"):
        assert any(line.split()[0] == etype for line in lines), etype
    assert lines[0].split() == ["type", "precision", "recall", "f1", "support", "span_f1"]
    micro = next(line for line in lines if line.startswith("micro"))
    assert f"{metrics['f1_micro']:.4f}" in micro and f"{metrics['span_f1_micro']:.4f}" in micro
    assert next(line for line in lines if line.startswith("macro"))
    assert len({len(line) for line in lines}) == 1  # fixed width


def test_table_without_span_metrics_has_no_span_column():
    table = format_metrics_table(compute_metrics([["B-NAME"]], [["B-NAME"]]))
    assert "span_f1" not in table
    assert "NAME" in table and "1.0000" in table
