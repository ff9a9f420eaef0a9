"""The synthetic resumes are the default data of the demo and every test: exact, varied and reproducible."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from resume_ner.config import DEFAULT_LABEL_MAP
from resume_ner.data.document import Document
from resume_ner.data.synth import (
    DESIGNATIONS,
    JOB_SKILLS,
    LABELS,
    SOFT_SKILLS,
    TECH_TOOLS,
    generate_resumes,
    write_synthetic_resumes,
)

EXPERIENCE_HEADINGS = {
    "experience", "work experience", "work history", "professional experience", "employment history",
    "career history", "relevant experience", "employment", "experience details",
}
BULLETS = ("•", "- ", "* ", "▪", "➢", "o ", "· ", "– ", "> ", "✓")


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return generate_resumes(50, seed=0)


def test_same_seed_gives_identical_documents() -> None:
    first = [json.dumps(d.to_doccano(), ensure_ascii=False) for d in generate_resumes(12, seed=7)]
    second = [json.dumps(d.to_doccano(), ensure_ascii=False) for d in generate_resumes(12, seed=7)]
    assert first == second


def test_different_seeds_give_different_documents() -> None:
    a = generate_resumes(5, seed=1)
    b = generate_resumes(5, seed=2)
    assert [d.text for d in a] != [d.text for d in b]
    assert all(x.text != y.text for x, y in zip(a, b))


def test_a_prefix_of_the_set_does_not_depend_on_n() -> None:
    small = generate_resumes(3, seed=5)
    large = generate_resumes(8, seed=5)
    assert [d.to_doccano() for d in small] == [d.to_doccano() for d in large[:3]]


def test_spans_are_exact_sorted_and_disjoint(docs: list[Document]) -> None:
    for doc in docs:
        previous_end = 0
        for span in doc.spans:
            entity = doc.text[span.start:span.end]
            assert 0 <= span.start < span.end <= len(doc.text), (doc.id, span)
            assert entity == entity.strip(), (doc.id, span, entity)
            assert span.start >= previous_end, (doc.id, span)  # sorted, no overlap
            assert span.label in DEFAULT_LABEL_MAP, (doc.id, span)
            previous_end = span.end


def test_all_twelve_labels_appear(docs: list[Document]) -> None:
    counts = Counter(span.label for doc in docs for span in doc.spans)
    assert set(counts) == set(LABELS) == set(DEFAULT_LABEL_MAP)
    assert all(doc.spans for doc in docs)
    assert sum(1 for doc in docs for s in doc.spans if s.label == "Name") >= len(docs)


def test_ids_are_unique_and_carry_the_seed(docs: list[Document]) -> None:
    ids = [doc.id for doc in docs]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "synth-0-0" and ids[-1] == "synth-0-49"


def test_layouts_vary(docs: list[Document]) -> None:
    headings, bullets = set(), set()
    for doc in docs:
        for line in doc.text.splitlines():
            key = line.strip().rstrip(":").lower()
            if key in EXPERIENCE_HEADINGS:
                headings.add(key)
            for bullet in BULLETS:
                if line.startswith(bullet) and len(line) > len(bullet) + 3:
                    bullets.add(bullet)
    assert len(headings) >= 5, headings
    assert len(bullets) >= 5, bullets
    # casing varies too: some names written in capitals, some skills in lower case
    names = [doc.text[s.start:s.end] for doc in docs for s in doc.spans if s.label == "Name"]
    skills = [doc.text[s.start:s.end] for doc in docs for s in doc.spans if s.label == "Job Specific Skills"]
    assert any(n.isupper() for n in names) and any(not n.isupper() for n in names)
    assert any(s.islower() for s in skills) and any(s[0].isupper() for s in skills)


def test_lengths_vary_and_some_exceed_one_window(docs: list[Document]) -> None:
    lengths = [len(doc.text) for doc in docs]
    assert sum(n > 3000 for n in lengths) >= 3
    assert sum(n < 2000 for n in lengths) >= 3
    assert all(n > 500 for n in lengths)


def test_every_vocabulary_mention_is_labelled(docs: list[Document]) -> None:
    """A covered entity never appears in unlabelled text (links such as ``github.com/x`` aside)."""
    vocab = sorted({v for v in DESIGNATIONS + JOB_SKILLS + TECH_TOOLS + SOFT_SKILLS if len(v) >= 4}, key=len)
    pattern = re.compile(
        r"(?<![\w.])(" + "|".join(re.escape(v) for v in reversed(vocab)) + r")(?![\w.])", re.IGNORECASE
    )
    leaks = []
    for doc in docs:
        chars = list(doc.text)
        for span in doc.spans:
            chars[span.start:span.end] = "\0" * (span.end - span.start)
        leaks += [(doc.id, m.group(1)) for m in pattern.finditer("".join(chars))]
    assert not leaks, leaks[:10]


def test_write_synthetic_resumes_writes_doccano_jsonl(tmp_path) -> None:
    path = write_synthetic_resumes(tmp_path / "synth", n=6, seed=3)
    assert path == tmp_path / "synth" / "resumes.jsonl"
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left behind
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records == [doc.to_doccano() for doc in generate_resumes(6, seed=3)]
    for record in records:
        assert set(record) == {"id", "text", "labels"}
        assert record["id"].startswith("synth-3-")
        for start, end, label in record["labels"]:
            assert isinstance(start, int) and isinstance(end, int) and label in DEFAULT_LABEL_MAP
            assert record["text"][start:end].strip() == record["text"][start:end]


def test_zero_and_negative_counts() -> None:
    assert generate_resumes(0, seed=0) == []
    with pytest.raises(ValueError, match="n must be"):
        generate_resumes(-1, seed=0)


def test_generating_two_hundred_resumes_is_fast() -> None:
    started = time.perf_counter()
    generate_resumes(200, seed=11)
    assert time.perf_counter() - started < 6.0  # about 0.3 s on one core; generous for busy CI machines
