"""Loading datasets: one file split by the config, or a directory of given splits; all problems at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resume_ner.config import DataConfig
from resume_ner.data.dataset import load_dataset, load_documents
from resume_ner.data.splits import fingerprint_documents
from resume_ner.errors import DataValidationError

REAL_TRAIN = Path(__file__).resolve().parents[3].parent / "shared/data/resume-cvs/train.jsonl"


def _write_jsonl(path: Path, texts: list[str], prefix: str = "") -> Path:
    records = [{"id": f"{prefix}{i}", "text": t, "labels": [[0, len(t.split()[0]), "Name"]]} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _texts(n: int, start: int = 0) -> list[str]:
    return [f"Person{i} resume text" for i in range(start, start + n)]


def test_load_documents_returns_canonical_labels(tmp_path: Path) -> None:
    documents = load_documents(_write_jsonl(tmp_path / "a.jsonl", _texts(2)), DataConfig())
    assert [d.spans[0].label for d in documents] == ["NAME", "NAME"]


def test_load_documents_reports_parse_and_validation_problems_together(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"id": 1, "text": "Bob", "labels": [[0, 9, "Name"]]}\n'
        "not json\n"
        '{"id": 3, "text": "Ann", "labels": [[0, 3, "Hobby"]]}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataValidationError) as info:
        load_documents(path, DataConfig())
    assert [(p.line, p.doc_id) for p in info.value.problems] == [(2, None), (1, "1"), (3, "3")]


def test_single_file_is_split_by_the_config(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "all.jsonl", _texts(20))
    config = DataConfig(validation_fraction=0.2, test_fraction=0.1, split_seed=5)

    dataset = load_dataset(path, config)

    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (14, 4, 2)
    assert dataset.fingerprint == fingerprint_documents(dataset.train + dataset.validation + dataset.test)


def test_directory_uses_given_splits_and_cuts_a_missing_one_from_train(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", _texts(10), "t")
    _write_jsonl(tmp_path / "dev.jsonl", _texts(3, start=100), "v")
    config = DataConfig(validation_fraction=0.3, test_fraction=0.2)

    dataset = load_dataset(tmp_path, config)

    assert [d.id for d in dataset.validation] == ["v0", "v1", "v2"]
    assert len(dataset.test) == 2 and len(dataset.train) == 8
    assert {d.id[0] for d in dataset.train + dataset.test} == {"t"}
    assert dataset.fingerprint == fingerprint_documents(dataset.train + dataset.validation + dataset.test)


def test_directory_names_a_text_found_in_two_splits_and_every_file_problem(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", _texts(5), "t")
    _write_jsonl(tmp_path / "test.jsonl", _texts(1, start=4), "x")
    (tmp_path / "validation.jsonl").write_text('{"id": "v", "text": "Ann", "labels": [[0, 9, "Name"]]}\n')

    with pytest.raises(DataValidationError) as info:
        load_dataset(tmp_path, DataConfig(on_split_leak="error"))

    problems = info.value.problems
    assert [(Path(p.file).name, p.doc_id) for p in problems] == [("validation.jsonl", "v"), ("test.jsonl", "x0")]
    assert "in train (document 't4'" in problems[1].message


def test_a_training_text_also_in_test_is_dropped_from_train_by_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_jsonl(tmp_path / "train.jsonl", _texts(10), "t")
    _write_jsonl(tmp_path / "test.jsonl", _texts(1, start=4), "x")

    dataset = load_dataset(tmp_path, DataConfig(validation_fraction=0.2))

    assert "t4" not in {d.id for d in dataset.train + dataset.validation}
    assert [d.id for d in dataset.test] == ["x0"]
    assert len(dataset.train) + len(dataset.validation) == 9
    assert "dropped 1 training document" in caplog.text and "t4" in caplog.text


def test_directory_with_one_plain_data_file_is_split_like_that_file(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "resumes.jsonl", _texts(10), "r")
    config = DataConfig(validation_fraction=0.2, test_fraction=0.2)
    assert load_dataset(tmp_path, config) == load_dataset(tmp_path / "resumes.jsonl", config)


def test_directory_without_train_is_an_error(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "test.jsonl", _texts(2))
    with pytest.raises(DataValidationError, match="no train"):
        load_dataset(tmp_path, DataConfig())


@pytest.mark.slow
def test_real_resume_corpus_validates_with_the_default_label_map() -> None:
    if not REAL_TRAIN.exists():
        pytest.skip(f"{REAL_TRAIN} not present")
    documents = load_documents(REAL_TRAIN, DataConfig())
    assert len(documents) == 545
    assert len({s.label for d in documents for s in d.spans}) == 12
