"""Data: readers, validation, labels, splits, windows and the synthetic resume generator."""

from resume_ner.data.document import Document, Span, SplitDataset

__all__ = ["Document", "Span", "SplitDataset"]
