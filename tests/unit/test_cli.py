"""The command line stays light: help on every command without importing torch, transformers or mlflow."""

from __future__ import annotations

import subprocess
import sys

import pytest

from resume_ner.cli.main import build_parser, main

COMMANDS = [["final-train"], ["lineage", "show"], ["hpo", "run"], ["hpo", "worker"], ["hpo", "best"], ["hpo", "report"], ["data", "validate"], ["data", "stats"], ["data", "split"], ["data", "convert"], ["data", "synth"],
            ["train"], ["evaluate"], ["predict"], ["pipeline", "run"], ["pipeline", "compile"], ["register"],
            ["k8s", "pytorchjob", "render"], ["azureml", "build"]]


def test_top_level_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from resume_ner.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'kfp', 'optuna') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "train" in result.stdout and "predict" in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "--config-dir" in capsys.readouterr().out


def test_project_errors_print_one_line_and_exit_1(capsys):
    assert main(["train", "--output-dir", "out", "--no-tracking"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no training data") and "Traceback" not in err


def test_bad_override_is_a_usage_error_not_a_traceback(capsys):
    assert main(["train", "--output-dir", "out", "--set", "training.epochs=0"]) == 1
    assert "training.epochs" in capsys.readouterr().err


def test_container_entrypoint_trains_with_the_same_workflow(tiny_backbone, tmp_path):
    from resume_ner.data.synth import write_synthetic_resumes

    data = write_synthetic_resumes(tmp_path / "data", 12, seed=2)
    result = subprocess.run(
        [sys.executable, "-m", "resume_ner.training.cli.train", "--config-dir", str(_repo_config()),
         "--data-asset", str(data.parent), "--output-dir", str(tmp_path / "out"), "--no-tracking", "--quiet",
         "--set", f"model.backbone={tiny_backbone}", "--set", "model.max_length=64", "--set", "model.stride=8",
         "--set", "training.epochs=1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "test_metrics.json").is_file()


def _repo_config():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "config"
