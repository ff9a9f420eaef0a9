"""Validation: every problem collected and named, cleaned documents with canonical labels."""

from __future__ import annotations

import pytest

from resume_ner.config import DEFAULT_LABEL_MAP
from resume_ner.data.document import Document, Span
from resume_ner.data.validation import dataset_stats, validate_documents
from resume_ner.errors import DataValidationError

TEXT = "Jane Doe, Python developer at Acme"  # Jane Doe 0-8, Python 10-16, developer 17-26, Acme 30-34


def _doc(doc_id: str, spans: list[Span], text: str = TEXT, line: int = 1) -> Document:
    return Document(doc_id, text, spans, source=f"data.jsonl:{line}")


def test_span_past_end_and_overlap_are_both_named_in_one_error() -> None:
    documents = [
        _doc("a", [Span(0, 8, "Name"), Span(30, 99, "Companies worked at")], line=1),
        _doc("b", [Span(0, 8, "Name"), Span(5, 8, "Location")], text=TEXT + " ", line=2),
    ]
    report = validate_documents(documents, label_map=DEFAULT_LABEL_MAP)

    with pytest.raises(DataValidationError) as info:
        report.raise_if_problems("data.jsonl")
    message = str(info.value)
    assert "2 problem(s)" in message
    assert "data.jsonl:1 (document 'a'): span [30, 99, 'Companies worked at'] is out of range" in message
    assert "data.jsonl:2 (document 'b'): overlapping spans [0, 8, 'NAME'] 'Jane Doe', [5, 8, 'LOCATION'] 'Doe'" in message


def test_keep_longest_resolves_each_overlapping_group() -> None:
    spans = [Span(0, 8, "NAME"), Span(5, 8, "LOCATION"), Span(10, 26, "DESIGNATION"), Span(10, 16, "TECH_TOOL"),
             Span(30, 34, "COMPANY")]
    report = validate_documents([_doc("a", spans)], label_map={}, on_overlap="keep-longest")

    assert report.problems == []
    assert report.resolved_overlaps == 2
    assert report.documents[0].spans == [Span(0, 8, "NAME"), Span(10, 26, "DESIGNATION"), Span(30, 34, "COMPANY")]


def test_keep_longest_keeps_spans_that_do_not_touch_the_longest() -> None:
    spans = [Span(0, 16, "A"), Span(10, 20, "B"), Span(17, 26, "C")]  # B overlaps both, A and C are disjoint
    report = validate_documents([_doc("a", spans)], label_map={}, on_overlap="keep-longest")
    assert report.documents[0].spans == [Span(0, 16, "A"), Span(17, 26, "C")]
    assert report.resolved_overlaps == 1


def test_whitespace_edges_are_trimmed_and_counted_but_blank_spans_are_problems() -> None:
    spans = [Span(9, 17, "Tech Tools"), Span(16, 17, "Name")]  # " Python " and " "
    report = validate_documents([_doc("a", spans)], label_map=DEFAULT_LABEL_MAP)

    assert report.trimmed_spans == 1
    assert report.documents[0].spans == [Span(10, 16, "TECH_TOOL")]
    assert [p.message for p in report.problems] == ["span [16, 17, 'Name'] covers only whitespace ' '"]


def test_unknown_labels_and_bad_ranges_are_problems_and_labels_become_canonical() -> None:
    spans = [Span(30, 34, "Companies worked at"), Span(0, 8, "Nmae"), Span(10, 10, "Name"), Span(17, 26, "SKILL")]
    report = validate_documents([_doc("a", spans)], label_map=DEFAULT_LABEL_MAP)

    messages = [p.message for p in report.problems]
    assert len(messages) == 2
    assert "unknown label 'Nmae'" in messages[0] and "Name" in messages[0]
    assert messages[1] == "span [10, 10, 'Name'] has end <= start"
    assert report.documents[0].spans == [Span(17, 26, "SKILL"), Span(30, 34, "COMPANY")]


def test_empty_label_map_accepts_any_label() -> None:
    report = validate_documents([_doc("a", [Span(0, 8, "whatever")])], label_map={})
    assert report.problems == [] and report.documents[0].spans == [Span(0, 8, "whatever")]


def test_empty_documents_are_problems_not_skips() -> None:
    report = validate_documents([_doc("a", []), _doc("b", [], text=" \n ", line=2)], label_map={})
    assert [(p.line, p.doc_id, p.message) for p in report.problems] == [(2, "b", "text is empty")]
    assert [d.id for d in report.documents] == ["a", "b"]


def test_duplicates_name_both_documents_and_can_be_errors() -> None:
    documents = [_doc("a", [], line=1), _doc("a", [], text="Other resume", line=2),
                 _doc("c", [Span(0, 8, "Name")], line=3)]

    report = validate_documents(documents, label_map=DEFAULT_LABEL_MAP)
    assert report.problems == []
    assert [str(w) for w in report.warnings] == [
        "data.jsonl:3 (document 'c'): same text as document 'a' at data.jsonl:1, with different annotations",
        "data.jsonl:2 (document 'a'): duplicate id 'a': also at data.jsonl:1",
    ]

    strict = validate_documents(documents, label_map=DEFAULT_LABEL_MAP, on_duplicate="error")
    assert len(strict.problems) == 2 and strict.warnings == []


def test_input_documents_are_not_modified() -> None:
    original = _doc("a", [Span(9, 17, "Tech Tools")])
    validate_documents([original], label_map=DEFAULT_LABEL_MAP)
    assert original.spans == [Span(9, 17, "Tech Tools")]


def test_dataset_stats_counts_tokens_entities_and_lengths() -> None:
    documents = [_doc("a", [Span(0, 8, "NAME"), Span(30, 34, "COMPANY")]), _doc("b", [Span(0, 3, "NAME")], "Bob")]

    stats = dataset_stats(documents)
    assert stats["documents"] == 2 and stats["characters"] == len(TEXT) + 3
    assert stats["tokens"] == 7 and stats["token_unit"] == "whitespace words"
    assert stats["entities_per_type"] == {"NAME": 2, "COMPANY": 1} and stats["entity_types"] == 2
    assert stats["chars_per_document"] == {"mean": 18.5, "median": 18.5, "max": len(TEXT)}

    pieces = dataset_stats(documents, tokenizer=list)  # one "word piece" per character
    assert pieces["tokens"] == len(TEXT) + 3 and pieces["token_unit"] == "word pieces"
