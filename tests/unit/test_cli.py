"""The command line stays light: help on every command without importing torch, transformers or mlflow."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from resume_ner.cli.main import _configure_logging, build_parser, main

COMMANDS = [["final-train"], ["lineage", "show"], ["hpo", "run"], ["hpo", "worker"], ["hpo", "best"], ["hpo", "report"], ["data", "validate"], ["data", "stats"], ["data", "split"], ["data", "convert"], ["data", "synth"],
            ["train"], ["evaluate"], ["predict"], ["pipeline", "run"], ["pipeline", "compile"], ["register"],
            ["k8s", "pytorchjob", "render"], ["k8s", "inferenceservice", "render"], ["azureml", "build"],
            ["azureml", "submit"], ["tracking", "relog"], ["serve"], ["load-test"]]


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


def test_an_override_problem_names_the_set_item_and_the_closest_setting(capsys):
    assert main(["train", "--output-dir", "out", "--set", "training.learnin_rate=1e-4"]) == 1
    err = capsys.readouterr().err
    assert "--set training.learnin_rate=1e-4: no setting training.learnin_rate; did you mean " \
           "training.learning_rate?" in err
    assert "defaults" not in err and "Extra inputs" not in err


@pytest.mark.parametrize("command", [["lineage"], ["tracking"]], ids=" ".join)
def test_command_groups_describe_themselves(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert not description.startswith("positional arguments") and len(description) > 60


def test_register_help_is_plain_text_and_its_file_output_is_output(capsys):
    with pytest.raises(SystemExit):
        main(["register", "--help"])
    out = capsys.readouterr().out
    assert "`" not in out and "--output FILE, --lineage-out FILE" in out
    for flag in ("--output", "--lineage-out"):
        assert build_parser().parse_args(["register", "dir", flag, "lineage.json"]).output == "lineage.json"


def test_binary_and_utf16_inputs_are_told_apart_by_data_validate(tmp_path, capsys):
    binary, utf16 = tmp_path / "model.bin", tmp_path / "resumes.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    utf16.write_text('{"text": "Zoë Doe", "labels": [[0, 7, "Name"]]}\n', encoding="utf-16")
    assert main(["data", "validate", str(binary)]) == 1
    assert f"{binary}: is not a text file (binary data at byte 9)" in capsys.readouterr().err
    assert main(["data", "validate", str(utf16)]) == 0
    assert "OK" in capsys.readouterr().out


def test_default_output_has_no_info_lines_but_training_progress(tmp_path):
    data = tmp_path / "resumes.jsonl"
    data.write_text('{"text": "Jane Doe", "labels": [[0, 8, "Name"]]}\n')
    command = [sys.executable, "-m", "resume_ner.cli.main", "data", "validate", str(data)]
    default = subprocess.run(command, capture_output=True, text=True, timeout=120)
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True, timeout=120)
    assert default.returncode == 0 and "OK" in default.stdout and default.stderr == ""
    assert "INFO resume_ner.data.readers: read 1 document(s)" in verbose.stderr

    loggers = [logging.getLogger(name) for name in ("", "resume_ner.training.trainer", "resume_ner.hpo", "mlflow")]
    levels = [logger.level for logger in loggers]
    try:
        for flags, progress in (([], True), (["-q"], False), (["-v"], True)):
            _configure_logging(build_parser().parse_args(["train", "--output-dir", "out", *flags]))
            assert logging.getLogger("resume_ner.training.trainer").isEnabledFor(logging.INFO) is progress
            assert logging.getLogger("resume_ner.hpo.sweep").isEnabledFor(logging.INFO) is progress
            assert logging.getLogger("resume_ner.data.readers").isEnabledFor(logging.INFO) is (flags == ["-v"])
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def test_container_entrypoint_trains_with_the_same_workflow(tiny_backbone, tmp_path):
    from resume_ner.data.synth import write_synthetic_resumes

    data = write_synthetic_resumes(tmp_path / "data", 12, seed=2)
    result = subprocess.run(
        [sys.executable, "-m", "resume_ner.cli.train", "--config-dir", str(_repo_config()),
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
