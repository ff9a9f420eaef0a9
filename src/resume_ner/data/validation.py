"""Check parsed documents, collecting every problem, and return cleaned copies with canonical labels.

Problems (each names file, line and document id): empty text, span out of range, ``end <= start``,
span of only whitespace, unknown label (when a label map is given), overlapping spans (unless
``on_overlap="keep-longest"``). Fixed without being a problem, but counted: leading/trailing whitespace
trimmed off spans, overlaps resolved by ``keep-longest``. Duplicate ids and duplicate texts name both
documents; they are warnings by default (``on_duplicate="warn"``) and problems with ``on_duplicate="error"``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from resume_ner.data.document import Document, Span
from resume_ner.data.labels import canonical_label
from resume_ner.errors import DataValidationError, Problem

logger = logging.getLogger(__name__)

OverlapPolicy = Literal["error", "keep-longest"]
DuplicatePolicy = Literal["error", "warn"]


@dataclass
class ValidationReport:
    """Cleaned documents (canonical labels, trimmed and sorted spans), every problem, and what was fixed."""

    documents: list[Document]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    trimmed_spans: int = 0
    resolved_overlaps: int = 0

    def raise_if_problems(self, path: str | Path) -> None:
        """Raise ``DataValidationError`` listing every problem, if there is any."""
        if self.problems:
            raise DataValidationError(self.problems, summary=f"{path}: invalid annotated resumes")


def document_problem(document: Document, message: str) -> Problem:
    """A problem located at ``document.source`` (``"file:line"``) and naming the document id."""
    file, _, line = (document.source or "<documents>").rpartition(":")
    if not line.isdigit():
        return Problem(document.source or "<documents>", None, document.id, message)
    return Problem(file, int(line), document.id, message)


def validate_documents(
    documents: Iterable[Document],
    *,
    label_map: dict[str, str],
    on_overlap: OverlapPolicy = "error",
    on_duplicate: DuplicatePolicy = "warn",
) -> ValidationReport:
    """Check every document and span; an empty ``label_map`` accepts any label and keeps it as is."""
    if on_overlap not in ("error", "keep-longest"):
        raise ValueError(f"on_overlap must be 'error' or 'keep-longest', got {on_overlap!r}")
    if on_duplicate not in ("error", "warn"):
        raise ValueError(f"on_duplicate must be 'error' or 'warn', got {on_duplicate!r}")
    documents = list(documents)
    report = ValidationReport(documents=[])
    for document in documents:
        report.documents.append(_clean_document(document, label_map, on_overlap, report))
    duplicates = _duplicates(documents)
    (report.problems if on_duplicate == "error" else report.warnings).extend(duplicates)
    logger.debug(
        "checked %d document(s): %d document problem(s), %d warning(s), %d span(s) trimmed, %d overlap(s) resolved",
        len(documents),
        len(report.problems),
        len(report.warnings),
        report.trimmed_spans,
        report.resolved_overlaps,
    )
    return report


def _clean_document(
    document: Document, label_map: dict[str, str], on_overlap: OverlapPolicy, report: ValidationReport
) -> Document:
    """The document with its valid spans trimmed, relabelled and sorted; every invalid span is a problem."""
    text = document.text
    if not text.strip():
        report.problems.append(document_problem(document, "text is empty"))
    known = ", ".join(sorted(label_map)) or "any"
    spans: list[Span] = []
    for span in document.spans:
        shown = f"span {span.to_list()}"
        if span.end <= span.start:
            report.problems.append(document_problem(document, f"{shown} has end <= start"))
            continue
        if span.start < 0 or span.end > len(text):
            message = f"{shown} is out of range: the text has {len(text)} characters"
            report.problems.append(document_problem(document, message))
            continue
        label = canonical_label(span.label, label_map)
        if label is None:
            message = f"{shown} has unknown label {span.label!r}; known labels: {known} (see data.label_map)"
            report.problems.append(document_problem(document, message))
        covered = text[span.start : span.end]
        if not covered.strip():
            report.problems.append(document_problem(document, f"{shown} covers only whitespace {covered!r}"))
            continue
        start = span.start + len(covered) - len(covered.lstrip())
        end = span.end - (len(covered) - len(covered.rstrip()))
        report.trimmed_spans += (start, end) != (span.start, span.end)
        if label is not None:
            spans.append(Span(start, end, label))
    return Document(document.id, text, _resolve_overlaps(document, sorted(spans), on_overlap, report), document.source)


def _resolve_overlaps(
    document: Document, spans: list[Span], on_overlap: OverlapPolicy, report: ValidationReport
) -> list[Span]:
    """``spans`` (sorted) without overlaps: each overlapping group is a problem, or keeps its longest spans."""
    groups: list[list[Span]] = []
    group_end = -1
    for span in spans:
        if groups and span.start < group_end:
            groups[-1].append(span)
            group_end = max(group_end, span.end)
        else:
            groups.append([span])
            group_end = span.end
    kept: list[Span] = []
    for group in groups:
        if len(group) == 1:
            kept += group
        elif on_overlap == "error":
            shown = ", ".join(f"{s.to_list()} {document.text[s.start : s.end]!r}" for s in group)
            message = f"overlapping spans {shown} (fix them, or set data.on_overlap=keep-longest)"
            report.problems.append(document_problem(document, message))
        else:
            longest_first = sorted(group, key=lambda s: (s.start - s.end, s.start, s.label))
            chosen: list[Span] = []
            for span in longest_first:
                if all(span.end <= c.start or c.end <= span.start for c in chosen):
                    chosen.append(span)
            report.resolved_overlaps += len(group) - len(chosen)
            kept += sorted(chosen)
    return kept


def _duplicates(documents: list[Document]) -> list[Problem]:
    """One problem per document whose text, then per document whose id, was already seen; both are named."""
    first_by_text: dict[str, Document] = {}
    first_by_id: dict[str, Document] = {}
    same_text, same_id = [], []
    for document in documents:
        first = first_by_text.setdefault(document.text, document)
        if first is not document and document.text.strip():
            annotations = "the same" if sorted(first.spans) == sorted(document.spans) else "different"
            message = f"same text as document {first.id!r} at {_where(first)}, with {annotations} annotations"
            same_text.append(document_problem(document, message))
        first = first_by_id.setdefault(document.id, document)
        if first is not document:
            same_id.append(document_problem(document, f"duplicate id {document.id!r}: also at {_where(first)}"))
    return same_text + same_id


def _where(document: Document) -> str:
    return document.source or f"document {document.id!r}"


def dataset_stats(documents: Iterable[Document], tokenizer: Callable[[str], list[Any]] | None = None) -> dict[str, Any]:
    """Counts of documents, characters, tokens and entities per type; characters per document.

    ``tokenizer`` maps a text to its tokens (e.g. a Hugging Face ``tokenizer.tokenize``); without it tokens
    are whitespace-separated words. ``token_unit`` says which.
    """
    documents = list(documents)
    lengths = [len(d.text) for d in documents]
    split = tokenizer if tokenizer is not None else str.split
    per_type: dict[str, int] = {}
    for document in documents:
        for span in document.spans:
            per_type[span.label] = per_type.get(span.label, 0) + 1
    return {
        "documents": len(documents),
        "characters": sum(lengths),
        "tokens": sum(len(split(d.text)) for d in documents),
        "token_unit": "word pieces" if tokenizer is not None else "whitespace words",
        "entities": sum(per_type.values()),
        "entity_types": len(per_type),
        "entities_per_type": dict(sorted(per_type.items(), key=lambda item: (-item[1], item[0]))),
        "chars_per_document": {
            "mean": round(statistics.fmean(lengths), 1) if lengths else 0.0,
            "median": statistics.median(lengths) if lengths else 0,
            "max": max(lengths, default=0),
        },
    }
