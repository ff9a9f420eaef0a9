"""Deterministic document-level train/validation/test splits and the dataset fingerprint.

Documents are ordered by a seeded hash of their text, so the split depends on the seed and the documents,
never on the input order. Documents with the same text always land in the same split: a resume copied
into two splits would leak into evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

from resume_ner.data.document import Document, SplitDataset

logger = logging.getLogger(__name__)


def fingerprint_documents(documents: Sequence[Document]) -> str:
    """sha256 hex digest of the canonical JSON of ``(id, text, sorted spans)`` of every document, in order."""
    canonical = [[d.id, d.text, [s.to_list() for s in sorted(d.spans)]] for d in documents]
    blob = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def split_documents(
    documents: Sequence[Document], validation_fraction: float, test_fraction: float, seed: int
) -> SplitDataset:
    """Split by seed: about ``test_fraction`` of the documents to test, ``validation_fraction`` to validation.

    With at least 3 distinct texts each split with a fraction above 0 gets at least one document and
    train keeps at least one. The fingerprint is of train + validation + test in that order.
    """
    for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError("validation_fraction + test_fraction must be below 1.0 to leave training data")
    groups = _groups_by_text(documents, seed)
    n_test, n_validation = _split_sizes(len(documents), len(groups), test_fraction, validation_fraction)
    test: list[Document] = []
    validation: list[Document] = []
    train: list[Document] = []
    for index, group in enumerate(groups):
        if index == len(groups) - 1:  # train always keeps the last group
            train += group
        elif len(test) < n_test:
            test += group
        elif len(validation) < n_validation:
            validation += group
        else:
            train += group
    fingerprint = fingerprint_documents(train + validation + test)
    logger.info(
        "split %d document(s) with seed %d: %d train, %d validation, %d test (fingerprint %s)",
        len(documents),
        seed,
        len(train),
        len(validation),
        len(test),
        fingerprint[:12],
    )
    return SplitDataset(train=train, validation=validation, test=test, fingerprint=fingerprint)


def _groups_by_text(documents: Sequence[Document], seed: int) -> list[list[Document]]:
    """Documents grouped by text, groups in seeded-hash order, each group in (id, spans) order."""
    by_text: dict[str, list[Document]] = {}
    for document in documents:
        by_text.setdefault(document.text, []).append(document)

    def text_key(text: str) -> str:
        return hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()

    return [
        sorted(by_text[text], key=lambda d: (d.id, [s.to_list() for s in sorted(d.spans)]))
        for text in sorted(by_text, key=text_key)
    ]


def _split_sizes(n_documents: int, n_groups: int, test_fraction: float, validation_fraction: float) -> tuple[int, int]:
    """Documents wanted in test and validation: rounded shares, at least 1 each when possible."""
    n_test = round(n_documents * test_fraction)
    n_validation = round(n_documents * validation_fraction)
    if n_groups >= 3:
        n_test = max(n_test, 1) if test_fraction > 0 else 0
        n_validation = max(n_validation, 1) if validation_fraction > 0 else 0
    while n_test + n_validation >= n_documents and n_test + n_validation > 0:  # leave train a document
        if n_test >= n_validation:
            n_test -= 1
        else:
            n_validation -= 1
    return n_test, n_validation
