"""``resume-ner train`` when there is nothing to train: a finished training resumed says so and changes nothing
(files or MLflow run), and a refused training (output directory already trained, unwritable, resumed with
another configuration; a label count unlike the data's) opens no MLflow run."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from resume_ner.cli.main import main
from resume_ner.config import ResumeNerConfig, config_from_dict
from resume_ner.errors import CheckpointError, ConfigError
from resume_ner.workflows.training import run_training_workflow


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from resume_ner.data.synth import write_synthetic_resumes

    return write_synthetic_resumes(tmp_path_factory.mktemp("data"), 24, seed=3)


def _settings(backbone: Path, experiment: str) -> dict:
    return {"model": {"backbone": str(backbone), "max_length": 64, "stride": 16},
            "training": {"learning_rate": 1e-3, "batch_size": 8, "epochs": 1, "num_threads": 1},
            "tracking": {"experiment_name": experiment}}


def _config(backbone: Path, experiment: str, *, tracking: bool = True, num_labels: int | None = None,
            **training) -> ResumeNerConfig:
    settings = _settings(backbone, experiment)
    settings["training"].update(training)
    settings["model"]["num_labels"] = num_labels
    settings["tracking"]["enabled"] = tracking
    return config_from_dict(settings)


def _cli_settings(backbone: Path, experiment: str) -> list[str]:
    args = []
    for section, values in _settings(backbone, experiment).items():
        args += [item for key, value in values.items() for item in ("--set", f"{section}.{key}={value}")]
    return args


@pytest.fixture(scope="module")
def trained(tiny_backbone: Path, data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output directory of a finished (untracked) training of ``_config(..., "trained")``."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run_training_workflow(_config(tiny_backbone, "trained", tracking=False), data_file, out, quiet=True)
    return out


def _runs(store: str, experiment: str) -> list[dict]:
    """Each run of ``experiment`` as a dict (id, status, end time, params, metrics, tags)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [{"id": run.info.run_id, "status": run.info.status, "end_time": run.info.end_time,
             **run.data.to_dictionary()} for run in client.search_runs([found.experiment_id])]


def _files(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


def test_resuming_a_finished_training_says_so_and_changes_nothing(tiny_backbone, data_file, store, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(data_file), "--output-dir", str(out), "--tracking-uri", store, "-q",
            *_cli_settings(tiny_backbone, "finished")]
    assert main(args) == 0
    capsys.readouterr()
    files, runs = _files(out), _runs(store, "finished")
    result = json.loads((out / "train_result.json").read_text())
    assert len(runs) == 1 and result["run_id"] == runs[0]["id"] and (out / "test_metrics.json").is_file()

    assert main([*args, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed == (f"{out}: training already finished (epoch 1 of 1, completed all epochs; best validation "
                       f"f1_micro {result['best_metric']:.4f} at epoch 1); nothing to resume. To train again from "
                       "scratch, pass --overwrite instead of --resume\n")
    assert _files(out) == files
    assert _runs(store, "finished") == runs


def _already_trained(out: Path, trained: Path) -> dict:
    shutil.copytree(trained, out)
    return {}


def _unwritable(out: Path, trained: Path) -> dict:
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(out, os.W_OK):  # root writes anyway
        out.chmod(stat.S_IRWXU)
        pytest.skip("a read-only directory stays writable for this user (root)")
    return {}


def _finished_resumed_with_another_config(out: Path, trained: Path) -> dict:
    shutil.copytree(trained, out)
    return {"resume": True, "learning_rate": 5e-4}


def _killed_after_its_last_checkpoint_resumed_with_another_config(out: Path, trained: Path) -> dict:
    shutil.copytree(trained, out)
    (out / "train_result.json").unlink()
    (out / "test_metrics.json").unlink()
    return {"resume": True, "learning_rate": 5e-4}


REFUSALS = {
    "already trained": (_already_trained, ConfigError, "already holds a trained model"),
    "unwritable": (_unwritable, CheckpointError, "cannot write in the output directory"),
    "finished, resumed with another config": (_finished_resumed_with_another_config, CheckpointError,
                                              "different configuration"),
    "killed after its last checkpoint, resumed with another config": (
        _killed_after_its_last_checkpoint_resumed_with_another_config, CheckpointError, "different configuration"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_training_opens_no_mlflow_run(case, trained, tiny_backbone, data_file, store, tmp_path):
    prepare, error, message = REFUSALS[case]
    out = tmp_path / "run"
    options = prepare(out, trained)
    experiment = "refused-" + case.replace(" ", "-").replace(",", "")
    resume = options.pop("resume", False)
    before = _files(out)
    try:
        with pytest.raises(error, match=message):
            run_training_workflow(_config(tiny_backbone, experiment, **options), data_file, out, resume=resume,
                                  tracking_uri=store, quiet=True)
    finally:
        out.chmod(stat.S_IRWXU)
    assert _runs(store, experiment) == []
    assert _files(out) == before


def test_a_label_count_unlike_the_data_opens_no_mlflow_run(tiny_backbone, data_file, store, tmp_path):
    config = _config(tiny_backbone, "refused-num-labels", num_labels=3)
    with pytest.raises(ConfigError, match="num_labels=3"):
        run_training_workflow(config, data_file, tmp_path / "run", tracking_uri=store, quiet=True)
    assert _runs(store, "refused-num-labels") == []


def test_a_refused_final_training_opens_no_mlflow_run(trained, tiny_backbone, data_file, store, tmp_path):
    """`resume-ner final-train` into an output directory that holds a training: refused before its run opens."""
    from resume_ner.workflows.final import run_final_training_workflow

    out = tmp_path / "final"
    shutil.copytree(trained, out)
    before = _files(out)
    best = {"study_name": "s", "number": 0, "params": {"training.learning_rate": 1e-3}, "value": 0.5,
            "metric": "f1_micro", "run_id": None}
    with pytest.raises(ConfigError, match="already"):
        run_final_training_workflow(_config(tiny_backbone, "refused-final"), out, data_path=data_file, best=best,
                                    register=False, tracking_uri=store, quiet=True)
    assert _runs(store, "refused-final") == []
    assert _files(out) == before
