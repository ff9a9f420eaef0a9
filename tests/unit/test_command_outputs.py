"""What every command writes: never one of its own inputs, an existing file replaced only with --overwrite, written
through a temporary file renamed into place, with the permissions the umask gives; and the summary a long
command ends with."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from resume_ner.cli.main import main
from resume_ner.config import DataConfig
from resume_ner.data.dataset import load_dataset
from resume_ner.data.synth import write_synthetic_resumes
from resume_ner.errors import ConfigError
from resume_ner.io import check_outputs, open_atomic, write_json_atomic, write_text_atomic


@pytest.fixture
def resumes(tmp_path: Path) -> Path:
    return write_synthetic_resumes(tmp_path / "in", 4, 3)


# --- the rule, in io -------------------------------------------------------------------------------------------


def test_an_output_is_never_an_input_and_replaces_a_file_only_when_asked(tmp_path: Path):
    source = tmp_path / "a.jsonl"
    source.write_text("x\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(source)
    for output in (source, link, tmp_path / "." / "a.jsonl"):
        with pytest.raises(ConfigError, match="is an input of this command"):
            check_outputs([output], inputs=[source], overwrite=True)
    with pytest.raises(ConfigError, match="is in the input directory"):
        check_outputs([tmp_path / "train.jsonl"], inputs=[tmp_path], overwrite=True)
    existing = tmp_path / "out.jsonl"
    existing.write_text("old\n")
    with pytest.raises(ConfigError, match="out.jsonl already exists: pass --overwrite to replace it"):
        check_outputs([existing], inputs=[source])
    check_outputs([existing], inputs=[source], overwrite=True)
    check_outputs([tmp_path / "new.jsonl"], inputs=[source])


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path: Path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), open_atomic(target) as handle:
        handle.write("half of a new file")
        raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_permissions_of_the_umask(tmp_path: Path, umask: int, mode: int):
    previous = os.umask(umask)
    try:
        written = [write_text_atomic(tmp_path / "a.txt", "a"), write_json_atomic(tmp_path / "b.json", {}),
                   write_synthetic_resumes(tmp_path / "synth", 1, 0)]
        with open_atomic(tmp_path / "c.jsonl") as handle:
            handle.write("c\n")
        written.append(tmp_path / "c.jsonl")
    finally:
        os.umask(previous)
    assert {oct(path.stat().st_mode & 0o777) for path in written} == {oct(mode)}


# --- predict and evaluate --------------------------------------------------------------------------------------


def test_predict_never_writes_over_its_input(tiny_model_dir: Path, resumes: Path, capsys):
    before = resumes.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["predict", "--model", str(tiny_model_dir), str(resumes), "--output", str(resumes), *extra]) == 1
        assert "is an input of this command" in capsys.readouterr().err
        assert resumes.read_bytes() == before


def test_predict_replaces_an_output_only_with_overwrite_and_ends_with_a_summary(tiny_model_dir, resumes, tmp_path,
                                                                                capsys):
    output = tmp_path / "entities.jsonl"
    output.write_text("an earlier run\n")
    assert main(["predict", "--model", str(tiny_model_dir), str(resumes), "--output", str(output)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err and output.read_text() == "an earlier run\n"
    assert main(["predict", "--model", str(tiny_model_dir), str(resumes), "--output", str(output), "--overwrite"]) == 0
    lines = output.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["entities"] is not None for line in lines)
    entities = sum(len(json.loads(line)["entities"]) for line in lines)
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith(f"predicted {entities} entities in 4 document(s) in ") and summary.endswith(str(output))
    assert main(["predict", "-q", "--model", str(tiny_model_dir), str(resumes), "--output", str(output),
                 "--overwrite"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no summary


def test_predict_points_at_the_model_of_a_training_output_dir_and_warns_of_an_empty_text(tiny_model_dir, tmp_path,
                                                                                         capsys, caplog):
    assert main(["predict", "--model", str(tiny_model_dir.parent), str(tiny_model_dir / "config.json")]) == 1
    assert f"pass --model {tiny_model_dir}" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["predict", "--model", str(tiny_model_dir), str(empty)]) == 0
    assert json.loads(capsys.readouterr().out) == {"source": str(empty), "entities": []}
    assert f"{empty}: the text is empty" in caplog.text


def test_evaluate_never_writes_over_its_data_and_replaces_metrics_only_with_overwrite(tiny_model_dir, tmp_path, capsys):
    from resume_ner.data.synth import generate_resumes

    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps(d.to_doccano()) + "\n" for d in generate_resumes(3, 9)))
    before = data.read_bytes()
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(data),
                 "--overwrite"]) == 1
    assert "is an input of this command" in capsys.readouterr().err and data.read_bytes() == before
    metrics = tmp_path / "metrics.json"
    metrics.write_text("{}")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(metrics)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(metrics),
                 "--overwrite"]) == 0
    assert json.loads(metrics.read_text())["documents"] == 3
    assert "evaluated 3 document(s) in " in capsys.readouterr().err


# --- data commands ---------------------------------------------------------------------------------------------


def test_data_commands_follow_the_same_rule(resumes: Path, tmp_path: Path, capsys):
    before = resumes.read_bytes()
    assert main(["data", "convert", str(resumes), "--to", "doccano", "--output", str(resumes), "--overwrite"]) == 1
    assert "is an input of this command" in capsys.readouterr().err and resumes.read_bytes() == before
    assert main(["data", "split", str(resumes.parent), "--output-dir", str(resumes.parent), "--overwrite"]) == 1
    assert "is in the input directory" in capsys.readouterr().err
    assert sorted(p.name for p in resumes.parent.iterdir()) == ["resumes.jsonl"]
    assert main(["data", "synth", "--n", "2", "--output-dir", str(resumes.parent)]) == 1
    assert "resumes.jsonl already exists: pass --overwrite" in capsys.readouterr().err
    assert resumes.read_bytes() == before
    assert main(["data", "convert", str(resumes), "--to", "conll", "--out", str(tmp_path / "a.conll")]) == 0  # alias


@pytest.mark.parametrize("n", ["-5", "0", "many"])
def test_synth_takes_one_resume_or_more(tmp_path: Path, capsys, n: str):
    with pytest.raises(SystemExit) as exited:
        main(["data", "synth", "--n", n, "--output-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert f"argument --n: {n!r} is not a number of resumes: give 1 or more" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_same_split_data_has_the_same_fingerprint_whatever_the_seed(resumes: Path, tmp_path: Path, capsys):
    """`data split --seed 1` prints the fingerprint training records for the directory it wrote, whatever
    data.split_seed training runs with: given splits are not re-ordered."""
    splits = tmp_path / "splits"
    write_synthetic_resumes(tmp_path / "more", 30, 5).rename(resumes)
    assert main(["data", "split", str(resumes), "--output-dir", str(splits), "--seed", "1"]) == 0
    printed = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    for seed in (1, 42, 7):
        assert load_dataset(splits, DataConfig(split_seed=seed)).fingerprint == printed
