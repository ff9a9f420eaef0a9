"""bench/common.py: the split every system trains on, and the span scoring every system is judged by."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from resume_ner.data.synth import generate_resumes

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["common"] = module  # the name the bench scripts import it by; dataclasses look it up
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH))
    del sys.modules["common"]


def _corpus(tmp_path: Path) -> Path:
    """A corpus shaped like resume-cvs: train.jsonl and test.jsonl, one test resume also in train."""
    docs = generate_resumes(30, seed=5)
    train, test = docs[:24], docs[24:]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [d.to_doccano() for d in [*train, test[0]]]
    (corpus / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (corpus / "test.jsonl").write_text("".join(json.dumps(d.to_doccano()) + "\n" for d in test), encoding="utf-8")
    return corpus


def test_splits_drop_the_test_resume_from_train_and_keep_test_whole(common, tmp_path):
    corpus = _corpus(tmp_path)
    counts = common.write_splits(corpus, tmp_path / "splits", train_limit=10, validation_limit=2)
    assert counts == {"train": 10, "validation": 2, "test": 6}
    full = common.write_splits(corpus, tmp_path / "full")
    train = common.read_split(tmp_path / "full", "train")
    test = common.read_split(tmp_path / "full", "test")
    assert full["train"] + full["validation"] == 24 and full["test"] == 6
    assert not {d.text for d in train} & {d.text for d in test}
    assert {s.label for d in test for s in d.spans} <= {"NAME", "EMAIL", "DESIGNATION", "COMPANY", "LOCATION",
                                                        "YEARS_EXPERIENCE", "COLLEGE", "DEGREE", "GRADUATION_YEAR",
                                                        "SKILL", "TECH_TOOL", "SOFT_SKILL"}


def test_scores_are_exact_span_matches_after_trimming_whitespace(common, tmp_path):
    common.write_splits(_corpus(tmp_path), tmp_path / "splits")
    test = common.read_split(tmp_path / "splits", "test")
    perfect, shifted = tmp_path / "perfect.jsonl", tmp_path / "shifted.jsonl"
    common.write_predictions(perfect, [d.id for d in test], [[(s.start, s.end, s.label) for s in d.spans] for d in test])
    assert common.score_predictions(test, perfect)["span_f1_micro"] == 1.0
    # One span of the first document one character short, and one padded with whitespace: one miss only.
    first = test[0]
    spans = [(s.start, s.end, s.label) for s in first.spans]
    spans[0] = (spans[0][0], spans[0][1] - 1, spans[0][2])
    start, end, label = spans[1]
    if start > 0 and first.text[start - 1].isspace():
        spans[1] = (start - 1, end, label)
    rows = [spans, *[[(s.start, s.end, s.label) for s in d.spans] for d in test[1:]]]
    common.write_predictions(shifted, [d.id for d in test], rows)
    scores = common.score_predictions(test, shifted)
    total = sum(len(d.spans) for d in test)
    assert scores["span_recall_micro"] == pytest.approx((total - 1) / total)


def test_a_missing_document_is_an_error(common, tmp_path):
    common.write_splits(_corpus(tmp_path), tmp_path / "splits")
    test = common.read_split(tmp_path / "splits", "test")
    partial = tmp_path / "partial.jsonl"
    common.write_predictions(partial, [test[0].id], [[]])
    with pytest.raises(ValueError, match="no prediction for 5 test document"):
        common.score_predictions(test, partial)
