"""The in-memory form of annotated resumes shared by every module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Span:
    """A labelled character span of a document's text; ``end`` is exclusive."""

    start: int
    end: int
    label: str

    def to_list(self) -> list[Any]:
        """The Doccano form ``[start, end, label]``."""
        return [self.start, self.end, self.label]


@dataclass
class Document:
    """One annotated resume: its id, full text and labelled spans (sorted by start)."""

    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    source: str | None = None  # "file:line" the document was read from, for error messages

    def to_doccano(self) -> dict[str, Any]:
        """The Doccano JSONL record of this document."""
        return {"id": self.id, "text": self.text, "labels": [s.to_list() for s in self.spans]}


@dataclass
class SplitDataset:
    """Documents split into train / validation / test, with the fingerprint of the whole set."""

    train: list[Document]
    validation: list[Document]
    test: list[Document]
    fingerprint: str
