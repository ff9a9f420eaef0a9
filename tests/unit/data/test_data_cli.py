"""``resume-ner data ...`` through a tiny stand-in for the top-level parser."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import pytest

from resume_ner.cli.data_commands import register
from resume_ner.data.readers import read_documents
from resume_ner.errors import ConfigError

RECORDS = [
    {"id": 1, "text": "Jane Doe\nPython developer at Acme", "labels": [[0, 8, "Name"], [9, 15, "Tech Tools"],
                                                                     [29, 33, "Companies worked at"]]},
    {"id": 2, "text": "Bob Stone\nJava engineer", "labels": [[0, 9, "Name"], [10, 14, "Tech Tools"]]},
    {"id": 3, "text": "Ann Lee\nSQL analyst at Initech", "labels": [[0, 7, "Name"], [8, 11, "Tech Tools"],
                                                                   [23, 30, "Companies worked at"]]},
]


def _run(argv: list[str]) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config-dir")
    common.add_argument("--set", dest="overrides", action="append", default=[])
    parser = argparse.ArgumentParser(prog="resume-ner")
    register(parser.add_subparsers(dest="command", required=True), [common])
    args = parser.parse_args(argv)
    return args.func(args)


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_validate_reports_counts_and_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "a.jsonl", RECORDS)
    assert _run(["data", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "documents: 3" in out and "entities: 8 in 3 type(s)" in out
    assert "problems:" not in out and "warnings:" not in out  # no empty sections beside the verdict
    assert "TECH_TOOL" in out and out.rstrip().endswith("OK (0 warning(s))")


def test_validate_names_problems_with_file_and_line_and_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [RECORDS[0], {"id": 9, "text": "Bob", "labels": [[0, 3, "Name"], [1, 3, "Location"], [2, 40, "Name"]]}]
    path = _write(tmp_path / "a.jsonl", bad)

    assert _run(["data", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2 (document '9'): span [2, 40, 'Name'] is out of range" in out
    assert f"{path}:2 (document '9'): overlapping spans" in out
    assert "FAILED: 2 problem(s)" in out

    assert _run(["data", "validate", str(path), "--on-overlap", "keep-longest", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and report["resolved_overlaps"] == 1
    assert [(p["line"], p["doc_id"]) for p in report["problems"]] == [(2, "9")]


def test_validate_uses_label_map_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "a.jsonl", [{"id": 1, "text": "Bob", "labels": [[0, 3, "Hobby"]]}])
    assert _run(["data", "validate", str(path)]) == 1
    assert "unknown label 'Hobby'" in capsys.readouterr().out

    assert _run(["data", "validate", str(path), "--json", "--set", "data.label_map={}"]) == 0
    assert json.loads(capsys.readouterr().out)["entities_per_type"] == {"Hobby": 1}


def test_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "a.jsonl", RECORDS)
    assert _run(["data", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 3 and stats["entities_per_type"] == {"NAME": 3, "TECH_TOOL": 3, "COMPANY": 2}


def test_split_writes_three_doccano_files_and_the_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "a.jsonl", RECORDS)
    argv = ["data", "split", str(path), "--output-dir", str(tmp_path / "out"), "--seed", "3"]

    assert _run(argv) == 0
    first = capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"train.jsonl, .*test.jsonl already exist: pass --overwrite"):
        _run(argv)  # the files are there: replaced only with --overwrite
    assert _run([*argv, "--overwrite"]) == 0
    assert capsys.readouterr().out == first
    fingerprint = first.strip().rsplit(" ", 1)[-1]
    assert len(fingerprint) == 64

    texts = []
    for name in ("train", "validation", "test"):
        result = read_documents(tmp_path / "out" / f"{name}.jsonl")
        assert result.format == "doccano" and len(result.documents) == 1
        texts += [d.text for d in result.documents]
    assert sorted(texts) == sorted(r["text"] for r in RECORDS)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("fmt", ["doccano", "spanjson", "conll"])
def test_convert_round_trips_text_and_spans(tmp_path: Path, fmt: str) -> None:
    source = _write(tmp_path / "a.jsonl", RECORDS)
    out = tmp_path / f"out.{fmt}"

    assert _run(["data", "convert", str(source), "--to", fmt, "--out", str(out)]) == 0

    result = read_documents(out)
    assert result.format == fmt and result.problems == []
    canonical = {"Name": "NAME", "Tech Tools": "TECH_TOOL", "Companies worked at": "COMPANY"}
    expected = [(r["text"], [[s, e, canonical[label]] for s, e, label in r["labels"]]) for r in RECORDS]
    assert [(d.text, [s.to_list() for s in d.spans]) for d in result.documents] == expected
    again = tmp_path / f"again.{fmt}"
    assert _run(["data", "convert", str(out), "--to", fmt, "--out", str(again)]) == 0
    assert again.read_text() == out.read_text()


def test_synth_calls_the_generator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def write_synthetic_resumes(out_dir: Path, n: int, seed: int) -> Path:
        calls.append((out_dir, n, seed))
        return out_dir / "train.jsonl"

    module = types.ModuleType("resume_ner.data.synth")
    module.write_synthetic_resumes = write_synthetic_resumes  # type: ignore[attr-defined]
    module.SYNTH_FILE = "resumes.jsonl"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "resume_ner.data.synth", module)

    assert _run(["data", "synth", "--n", "5", "--seed", "1", "--out", str(tmp_path)]) == 0
    assert calls == [(tmp_path, 5, 1)]
    assert str(tmp_path / "train.jsonl") in capsys.readouterr().out


def test_conll_conversion_warns_once_for_every_widened_span(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = [{"id": i, "text": f"Jane{i} Doe, Python dev", "labels": [[0, 4, "Name"], [12, 16, "Tech Tools"]]}
               for i in range(8)]  # "Jane" inside the token "Jane0", "Pyth" inside "Python": 2 widened spans each
    source = _write(tmp_path / "a.jsonl", records)
    with caplog.at_level("WARNING", logger="resume_ner.data.writers"):
        assert _run(["data", "convert", str(source), "--to", "conll", "--output", str(tmp_path / "a.conll")]) == 0
    [record] = [r for r in caplog.records if r.name == "resume_ner.data.writers"]
    assert record.getMessage().startswith("16 span(s) of 8 document(s) not on token boundaries were widened")
    assert record.getMessage().endswith(" ...")  # the first five documents named
