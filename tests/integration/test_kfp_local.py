"""The pipeline and its components run for real with kfp.local (subprocesses, tiny model): the whole
pipeline through the CLI, a bad-data run stopped by load_data and closed by the exit handler, a different
pipeline assembled from the compiled component YAML files alone, and load_data reading an imported Dataset.

No ``from __future__ import annotations`` here: the KFP compiler reads the test pipeline's annotations.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resume_ner.errors import ResumeNerError

pytest.importorskip("kfp")

REPO = Path(__file__).resolve().parents[2]
TINY_SETTINGS = ["training.learning_rate=1e-3", "hpo.max_length=64", "model.max_length=64", "model.stride=16",
                 "hpo.n_startup_trials=1"]


def _mlflow_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("resume-ner")
    return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=500)


@pytest.mark.timeout(900)
def test_pipeline_run_local_trains_tunes_registers_and_prints_the_summary(tiny_backbone, tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "resume_ner.cli.main", "pipeline", "run", "--local", "--n", "30",
               "--parallelism", "2", "--output-dir", str(tmp_path / "run"), "--set", f"model.backbone={tiny_backbone}",
               "--set", "hpo.n_trials=3", "--set", "training.epochs=2", "--set", f"tracking.tracking_uri={uri}"]
    command += [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for line in ("pipeline resume-ner-training SUCCEEDED", "sweep       study 'resume-ner-hpo-", "best trial  #",
                 "test        f1_micro", "registered  models:/resume-ner/1", "<- best trial", "entities extracted"):
        assert line in out, line
    # the console: a line per task start and end, progress and the summary; the rest is in the full log
    assert len(out.splitlines()) <= 80, out
    for task in ("plan-run", "load-data", "hpo-trial", "select-best", "final-train", "register-lineage"):
        assert f"{task} started" in out and f"{task} SUCCESS in " in out, task
    assert "epoch 1: train loss" in out and "Got executor_input" not in out
    [log] = (tmp_path / "run" / "logs").glob("pipeline-*.log")
    assert f"full log: {log}" in out
    assert "Got executor_input" in log.read_text() and "\x1b[" not in log.read_text()

    runs = _mlflow_runs(uri)
    by_stage = {}
    for run in runs:
        by_stage.setdefault(run.data.tags.get("resume_ner.stage"), []).append(run)
    [pipeline_run] = by_stage["pipeline"]
    assert pipeline_run.info.status == "FINISHED"  # ended by the exit handler
    pipeline_id = pipeline_run.data.tags["resume_ner.pipeline_run_id"]
    assert all(run.data.tags.get("resume_ner.pipeline_run_id") == pipeline_id for run in runs)
    assert all(run.data.tags.get("resume_ner.pipeline_status") == "SUCCEEDED" for run in runs)
    assert all(run.info.status == "FINISHED" for run in runs)
    [final] = by_stage["final"]
    assert final.data.tags["mlflow.parentRunId"] == pipeline_run.info.run_id
    study_runs = [run for run in runs if run.data.tags.get("resume_ner.study") and "resume_ner.trial_number" not in
                  run.data.tags and run.data.tags.get("resume_ner.stage") is None]
    [study_run] = study_runs
    assert study_run.data.tags["mlflow.parentRunId"] == pipeline_run.info.run_id

    lineage_files = list((tmp_path / "run" / "pipeline_root").glob("*/register-lineage/lineage"))
    lineage = json.loads(lineage_files[0].read_text())
    assert lineage["pipeline_run_id"] == pipeline_id
    assert sorted(trial["number"] for trial in lineage["trials"]) == [0, 1, 2]  # the trials of this run
    assert all(trial["run_id"] in {run.info.run_id for run in runs} for trial in lineage["trials"])

    # the champion is an MLflow pyfunc model that predicts what `resume-ner predict` does with the final checkpoint
    import mlflow.pyfunc
    import pandas as pd

    from resume_ner.data.synth import generate_resumes
    from resume_ner.inference import Predictor

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    champion = mlflow.pyfunc.load_model("models:/resume-ner@champion")
    [model_dir] = (tmp_path / "run" / "pipeline_root").glob("*/final-train/model")
    texts = [resume.text for resume in generate_resumes(3, seed=99)]
    expected = [[entity.to_dict() for entity in found] for found in Predictor(model_dir).predict(texts)]
    assert list(champion.predict(pd.DataFrame({"text": texts}))["entities"]) == expected

    import optuna

    [summary] = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'run' / 'hpo' / 'optuna.db'}")
    study = optuna.load_study(study_name=summary.study_name,
                              storage=f"sqlite:///{tmp_path / 'run' / 'hpo' / 'optuna.db'}")
    states = [trial.state.name for trial in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3 and "RUNNING" not in states


@pytest.mark.timeout(600)
def test_bad_data_stops_at_load_data_and_the_exit_handler_fails_the_mlflow_run(tmp_path, capfd):
    from resume_ner.config import load
    from resume_ner.kfp.local_run import run_local

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "r1", "text": "Jane Doe", "labels": [[0, 99, "Name"]]}) + "\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [f"tracking.tracking_uri={uri}"]
    with pytest.raises(ResumeNerError, match="load-data"):
        run_local(load(None, overrides), data_uri=bad, output_dir=tmp_path / "run")
    logs = capfd.readouterr()
    assert "bad.jsonl:1" in logs.out + logs.err and "r1" in logs.out + logs.err  # the validation report

    [run] = _mlflow_runs(uri)
    assert run.data.tags["resume_ner.stage"] == "pipeline"
    assert run.info.status == "FAILED"
    assert run.data.tags["resume_ner.pipeline_status"] == "FAILED"
    assert not list((tmp_path / "run" / "pipeline_root").glob("*/**/hpo-trial"))


@pytest.mark.timeout(600)
def test_a_pipeline_built_from_the_component_yaml_files_alone_runs_locally(tiny_backbone, tmp_path):
    import kfp.local
    from kfp import components, dsl

    from resume_ner.data.synth import write_synthetic_resumes

    loaded = {name: components.load_component_from_file(str(REPO / "components" / f"{name}.yaml"))
              for name in ("load_data", "hpo_trial", "select_best", "final_train")}
    storage = str(tmp_path / "optuna.db")

    @dsl.pipeline(name="train-without-registry")
    def train_without_registry(data_uri: str, overrides: list):
        data = loaded["load_data"](data_uri=data_uri, overrides=overrides)
        splits = {key: data.outputs[key] for key in ("train_data", "validation_data", "test_data")}
        trials = loaded["hpo_trial"](**splits, optuna_storage=storage, study_name="yaml-only", n_trials=2,
                                     overrides=overrides)
        best = loaded["select_best"](optuna_storage=storage, study_name="yaml-only", overrides=overrides).after(trials)
        loaded["final_train"](best_config=best.outputs["best_config"], **splits, overrides=overrides)

    data = write_synthetic_resumes(tmp_path / "data", 24, 3)
    root = tmp_path / "root"
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    train_without_registry(data_uri=str(data), overrides=[
        f"model.backbone={tiny_backbone}", "tracking.enabled=false", "training.epochs=1", "hpo.max_epochs=1",
        "training.num_threads=1", *TINY_SETTINGS])

    [model_dir] = root.glob("train-without-registry-*/final-train/model")
    assert {"config.json", "model.safetensors", "resume_ner.json"} <= {p.name for p in model_dir.iterdir()}
    [metrics] = root.glob("train-without-registry-*/final-train/executor_output.json")
    executor_output = json.loads(metrics.read_text())
    test_metrics = executor_output["artifacts"]["test_metrics"]["artifacts"][0]["metadata"]
    assert 0.0 <= test_metrics["test_f1_micro"] <= 1.0 and "test_f1_macro" in test_metrics
    confusion = executor_output["artifacts"]["entity_confusion"]["artifacts"][0]["metadata"]["confusionMatrix"]
    assert confusion["annotationSpecs"][-1]["displayName"] == "O"
    best = json.loads(next(root.glob("train-without-registry-*/select-best/best_config")).read_text())
    assert best["study_name"] == "yaml-only" and set(best["params"]) >= {"training.learning_rate"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("layout", ["file", "directory"])
def test_load_data_reads_a_dataset_the_importer_brings(tmp_path, layout):
    """The object-store route (pipeline.data_source: object_store): an importer's Dataset artifact, a single object
    or a prefix that the launcher downloads as a directory, is what load_data reads."""
    import kfp.local
    from kfp import components, dsl
    from kfp.dsl import Dataset

    from resume_ner.data.synth import write_synthetic_resumes

    load_data = components.load_component_from_file(str(REPO / "components" / "load_data.yaml"))

    @dsl.pipeline(name="imported-data")
    def imported_data(data_uri: str):
        imported = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=True)
        load_data(data=imported.output, overrides=["tracking.enabled=false"])

    if layout == "file":
        data = write_synthetic_resumes(tmp_path / "data", 20, 4)
    else:
        data = tmp_path / "data"
        data.mkdir()
        for split, (n, seed) in {"train": (12, 1), "validation": (3, 2), "test": (3, 3)}.items():
            write_synthetic_resumes(tmp_path / "raw" / split, n, seed).rename(data / f"{split}.jsonl")
    root = tmp_path / "root"
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    imported_data(data_uri=str(data))
    [output] = root.glob("imported-data-*/load-data/executor_output.json")
    documents = {split: json.loads(output.read_text())["artifacts"][f"{split}_data"]["artifacts"][0]["metadata"][
        "documents"] for split in ("train", "validation", "test")}
    assert sum(documents.values()) == (20 if layout == "file" else 18)
    if layout == "directory":
        assert documents == {"train": 12, "validation": 3, "test": 3}  # the given splits, as they are
