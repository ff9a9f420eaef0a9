"""Annotated documents -> the text of a Doccano JSONL, span JSON lines or CoNLL file."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence

from resume_ner.data.document import Document
from resume_ner.errors import DataValidationError, Problem

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("doccano", "spanjson", "conll")
_TOKEN = re.compile(r"\S+")


def render_documents(documents: Sequence[Document], fmt: str) -> str:
    """``documents`` as the text of a ``doccano`` / ``spanjson`` JSON-lines file or a ``conll`` file."""
    if fmt == "conll":
        widened: dict[str, int] = {}
        text = "".join(_conll_lines(document, widened) for document in documents)
        if widened:
            shown = ", ".join(f"{doc} ({n})" for doc, n in list(widened.items())[:5])
            logger.warning(
                "%d span(s) of %d document(s) not on token boundaries were widened to whole tokens: %s%s",
                sum(widened.values()),
                len(widened),
                shown,
                " ..." if len(widened) > 5 else "",
            )
        return text
    records = (d.to_doccano() for d in documents)
    if fmt == "spanjson":
        records = ({"id": r["id"], "text": r["text"], "annotations": r["labels"]} for r in records)
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _conll_lines(document: Document, widened_spans: dict[str, int]) -> str:
    """One CoNLL document: whitespace tokens with IOB2 tags, a blank line where the text has a line break.

    CoNLL is token-based: whitespace is normalised, and a span that does not start and end on token
    boundaries is widened to whole tokens (two spans inside one token become one; a span across a line break
    becomes two); their count is added to ``widened_spans`` under the document id.
    """
    bad = [s.label for s in document.spans if re.search(r"\s", s.label)]
    if bad:
        problem = Problem(
            document.source or "<documents>",
            None,
            document.id,
            f"label {bad[0]!r} contains whitespace, which CoNLL columns cannot hold; map it to a type "
            "without spaces in data.label_map",
        )
        raise DataValidationError([problem], summary="cannot write CoNLL")
    tokens = list(_TOKEN.finditer(document.text))
    starts, ends = {t.start() for t in tokens}, {t.end() for t in tokens}
    widened = sum(s.start not in starts or s.end not in ends for s in document.spans)
    if widened:
        widened_spans[document.id] = widened
    lines = ["-DOCSTART- O", ""]
    spans = sorted(document.spans)
    index, last_span, previous_end = 0, None, 0
    for token in tokens:
        if previous_end and "\n" in document.text[previous_end : token.start()]:
            lines.append("")
        previous_end = token.end()
        while index < len(spans) and spans[index].end <= token.start():
            index += 1
        span = spans[index] if index < len(spans) and spans[index].start < token.end() else None
        if span is None:
            lines.append(f"{token.group()} O")
        else:
            lines.append(f"{token.group()} {'I' if span is last_span else 'B'}-{span.label}")
            last_span = span
    return "\n".join(lines) + "\n\n"
