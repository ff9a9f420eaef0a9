"""Deterministic splits and the dataset fingerprint."""

from __future__ import annotations

import random

import pytest

from resume_ner.data.document import Document, Span
from resume_ner.data.splits import fingerprint_documents, split_documents


def _docs(n: int) -> list[Document]:
    return [Document(f"d{i}", f"Resume number {i}", [Span(0, 6, "NAME")]) for i in range(n)]


def _ids(documents: list[Document]) -> list[str]:
    return [d.id for d in documents]


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    documents = _docs(40)
    shuffled = documents[:]
    random.Random(1).shuffle(shuffled)

    a = split_documents(documents, 0.2, 0.1, seed=7)
    b = split_documents(shuffled, 0.2, 0.1, seed=7)

    assert (_ids(a.train), _ids(a.validation), _ids(a.test)) == (_ids(b.train), _ids(b.validation), _ids(b.test))
    assert (len(a.train), len(a.validation), len(a.test)) == (28, 8, 4)
    assert a.fingerprint == b.fingerprint
    assert sorted(_ids(a.train + a.validation + a.test)) == sorted(_ids(documents))


def test_another_seed_gives_another_split() -> None:
    a = split_documents(_docs(40), 0.2, 0.1, seed=7)
    b = split_documents(_docs(40), 0.2, 0.1, seed=8)
    assert set(_ids(a.test)) != set(_ids(b.test))
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize("n", [3, 4, 10])
def test_every_split_gets_a_document_when_there_are_three(n: int) -> None:
    dataset = split_documents(_docs(n), 0.1, 0.1, seed=0)
    assert dataset.train and dataset.validation and dataset.test


def test_zero_fraction_leaves_that_split_empty() -> None:
    dataset = split_documents(_docs(10), 0.0, 0.2, seed=0)
    assert dataset.validation == [] and len(dataset.test) == 2 and len(dataset.train) == 8


def test_same_text_never_lands_in_two_splits() -> None:
    documents = _docs(20) + [Document(f"copy{i}", f"Resume number {i}", []) for i in range(20)]
    dataset = split_documents(documents, 0.25, 0.25, seed=3)
    texts = [{d.text for d in split} for split in (dataset.train, dataset.validation, dataset.test)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_fractions_must_leave_training_data() -> None:
    with pytest.raises(ValueError):
        split_documents(_docs(10), 0.5, 0.5, seed=0)


def test_fingerprint_is_stable_and_sensitive_to_ids_text_and_spans() -> None:
    base = [Document("a", "Jane Doe", [Span(5, 8, "NAME"), Span(0, 4, "NAME")])]
    same = [Document("a", "Jane Doe", [Span(0, 4, "NAME"), Span(5, 8, "NAME")], source="other.jsonl:9")]
    fingerprint = fingerprint_documents(base)

    assert len(fingerprint) == 64 and fingerprint == fingerprint_documents(same)
    for changed in (
        [Document("b", "Jane Doe", base[0].spans)],
        [Document("a", "Jane Doe ", base[0].spans)],
        [Document("a", "Jane Doe", [Span(0, 4, "NAME")])],
        [Document("a", "Jane Doe", [Span(0, 4, "NAME"), Span(5, 8, "COMPANY")])],
        base + base,
    ):
        assert fingerprint_documents(changed) != fingerprint
