"""``resume-ner azureml build``: every kind of job as YAML that ``azure.ai.ml.load_job`` reads back unchanged;
``azureml submit`` against a FAKE MLClient."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
from pathlib import Path

import pytest
from azure.ai.ml import load_job
from azure.ai.ml.entities import Command

from support.fake_ml_client import FakeMLClient
from resume_ner.azureml import create_final_training_job, submit
from resume_ner.cli import azureml_commands
from resume_ner.cli.main import common_parent, main
from resume_ner.config import MODEL_SECTIONS, ResumeNerConfig, load
from resume_ner.errors import ConfigError

TARGET = ["--data-asset", "azureml:resumes:1", "--compute", "gpu-cluster", "--environment", "azureml:resume-ner:3",
          "--experiment", "resumes-exp", "--set", "hpo.sampler=random"]
TRAIN = "python -m resume_ner.cli.train"


def _args(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed as ``resume-ner azureml ...`` would parse it."""
    parser = argparse.ArgumentParser(prog="resume-ner")
    azureml_commands.register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    return parser.parse_args(["azureml", *argv])


def _build(tmp_path: Path, kind: str, *extra: str) -> tuple[dict, dict]:
    """(the job built in process, the job ``load_job`` reads from the written YAML), as normalised dicts."""
    out = tmp_path / f"{kind}.yaml"
    args = _args(["build", "--kind", kind, "--out", str(out), "--overwrite", *TARGET, *extra])
    assert args.func(args) == 0
    loaded = load_job(out)
    if isinstance(loaded, Command):  # load_job reads a command job as a command node
        loaded = loaded._to_job()
    return _normalised(azureml_commands.build_job(args)._to_dict()), _normalised(loaded._to_dict())


def _normalised(value):
    """``value`` without the empty entries the SDK writes or reads back as None."""
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items() if v not in (None, {}, [])}
    return value


def _set_overrides(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words) if word == "--set"]


STEPS = ["load_data", "hpo", "select_best", "final_train", "register_lineage"]
# The steps whose outputs each step reads: they run in STEPS order.
UPSTREAM = {"load_data": set(), "hpo": {"load_data"}, "select_best": {"hpo"},
            "final_train": {"load_data", "select_best"}, "register_lineage": {"final_train"}}
CLI = "python -m resume_ner.cli.main"


def _upstream(pipeline: dict) -> dict[str, set[str]]:
    """Step -> the steps whose outputs its inputs bind (``${{parent.jobs.<step>.outputs.<name>}}``)."""
    return {name: {re.fullmatch(r"\$\{\{parent\.jobs\.(\w+)\.outputs\.\w+\}\}", value["path"]).group(1)
                   for value in step.get("inputs", {}).values() if "parent.jobs." in str(value.get("path"))}
            for name, step in pipeline["jobs"].items()}


@pytest.mark.parametrize("kind", azureml_commands.KINDS)
def test_every_kind_is_read_back_by_load_job_into_an_equal_job(tmp_path, kind):
    built, loaded = _build(tmp_path, kind, "--instance-count", "2", "--process-count", "4", "--tag", "team=nlp")
    assert loaded == built
    if kind == "pipeline":
        assert list(built["jobs"]) == STEPS and _upstream(built) == _upstream(loaded) == UPSTREAM
    assert built["experiment_name"] == "resumes-exp"
    assert built["tags"]["team"] == "nlp" and built["tags"]["resume_ner.kind"] == {"sweep": "hpo"}.get(kind, kind)


def test_final_job_runs_the_entrypoint_on_the_data_with_pytorch_distribution(tmp_path):
    job, _ = _build(tmp_path, "final", "--instance-count", "2", "--process-count", "4")
    assert job["command"].startswith(f"{TRAIN} --data-asset ${{{{inputs.data}}}} --output-dir ${{{{outputs.model}}}} ")
    assert "--tracking-uri" not in job["command"] and "tracking.experiment_name=resumes-exp" in job["command"]
    assert job["command"].endswith(' && { [ "${RANK:-0}" != 0 ] || cp ${{outputs.model}}/*.json '
                                   '${{outputs.metrics}}/; }')
    assert job["inputs"] == {"data": {"type": "uri_folder", "path": "azureml:resumes:1"}}
    assert job["outputs"] == {"model": {"type": "uri_folder"}, "metrics": {"type": "uri_folder"}}
    assert (job["environment"], job["compute"]) == ("azureml:resume-ner:3", "azureml:gpu-cluster")
    assert job["distribution"] == {"type": "pytorch", "process_count_per_instance": 4}
    assert job["resources"] == {"instance_count": 2}
    single, _ = _build(tmp_path, "final")
    assert "distribution" not in single and "resources" not in single


def test_the_final_config_travels_as_set_overrides_that_load_back_to_it(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"study_name": "s", "number": 3, "params": {"training.learning_rate": 5e-5,
                                                                            "model.dropout": 0.25}}))
    extra = ["--best-json", str(best), "--backbone", "bert-base-cased", "--set", "data.label_map={Name: PERSON}",
             "--set", "data.path=/home/me/resumes.jsonl", "--set", "tracking.tracking_uri=sqlite:///local.db"]
    job, _ = _build(tmp_path, "final", *extra)
    expected = load(None, ["hpo.sampler=random", "data.label_map={Name: PERSON}", "model.backbone=bert-base-cased",
                           "training.learning_rate=5e-5", "model.dropout=0.25"])
    overrides = _set_overrides(job["command"])
    received = load(None, overrides)  # what the entrypoint loads in the job
    assert {s: received.to_dict()[s] for s in MODEL_SECTIONS} == {s: expected.to_dict()[s] for s in MODEL_SECTIONS}
    assert received.tracking.experiment_name == "resumes-exp"
    assert not any(item.startswith(("data.path=", "tracking.tracking_uri=")) for item in overrides)


def test_sweep_job_searches_the_space_with_the_per_epoch_metric(tmp_path):
    job, _ = _build(tmp_path, "sweep", "--max-concurrent-trials", "3", "--trial-timeout", "1800",
                    "--set", "hpo.n_trials=6", "--set", "hpo.timeout=7200", "--backbone", "roberta-base")
    assert set(job["search_space"]) == {"training_learning_rate", "training_batch_size", "training_weight_decay",
                                        "training_warmup_ratio", "model_dropout"}
    assert job["objective"] == {"primary_metric": "val_f1_micro", "goal": "maximize"}
    assert job["sampling_algorithm"] == {"type": "random", "seed": 42}
    assert job["early_termination"] == {"type": "median_stopping", "evaluation_interval": 1, "delay_evaluation": 1}
    assert job["limits"] == {"max_total_trials": 6, "max_concurrent_trials": 3, "timeout": 7200, "trial_timeout": 1800}
    command = job["trial"]["command"]
    assert "--set training.learning_rate=${{search_space.training_learning_rate}}" in command
    assert "model.backbone=roberta-base" in _set_overrides(command)
    assert job["inputs"] == {"data": {"type": "uri_folder", "path": "azureml:resumes:1"}}


def test_dry_run_is_two_trials_of_one_epoch(tmp_path):
    job, _ = _build(tmp_path, "dry-run", "--set", "hpo.n_trials=20")
    assert job["limits"] == {"max_total_trials": 2, "max_concurrent_trials": 2}
    overrides = _set_overrides(job["trial"]["command"])
    assert overrides[-1] == "training.epochs=1"  # after the searched values, so it wins
    assert job["tags"]["resume_ner.kind"] == "dry-run"


def test_pipeline_chains_the_steps_through_their_outputs(tmp_path):
    job, _ = _build(tmp_path, "pipeline", "--instance-count", "2", "--set", "final.promote=true",
                    "--set", "hpo.direction=minimize")
    steps = job["jobs"]
    assert list(steps) == STEPS
    assert steps["load_data"]["component"]["command"].startswith(
        f"{CLI} data split ${{{{inputs.data}}}} --output-dir ${{{{outputs.splits}}}} --set")
    assert steps["hpo"]["type"] == "sweep" and steps["hpo"]["objective"]["primary_metric"] == "val_f1_micro"
    assert steps["hpo"]["inputs"]["data"]["path"] == "${{parent.jobs.load_data.outputs.splits}}"
    select = steps["select_best"]
    assert select["inputs"]["best_trial"]["path"] == "${{parent.jobs.hpo.outputs.model}}"
    assert select["component"]["command"].startswith(f"{CLI} azureml select-best ")
    assert "--param training.learning_rate --param training.batch_size" in select["component"]["command"]
    assert load(None, _set_overrides(select["component"]["command"])).hpo.direction == "minimize"  # the sweep's goal
    final = steps["final_train"]
    assert final["inputs"]["final_config"]["path"] == "${{parent.jobs.select_best.outputs.final_config}}"
    assert final["inputs"]["data"]["path"] == "${{parent.jobs.load_data.outputs.splits}}"
    assert final["component"]["command"] == (
        f"{CLI} final-train --config-dir ${{{{inputs.final_config}}}} --best-json "
        "${{inputs.final_config}}/best_trial.json --data ${{inputs.data}} --output-dir ${{outputs.model}} "
        '--no-register && { [ "${RANK:-0}" != 0 ] || cp ${{outputs.model}}/*.json ${{outputs.metrics}}/; }')
    assert set(final["component"]["outputs"]) == {"model", "metrics"}
    assert final["resources"] == {"instance_count": 2}
    register = steps["register_lineage"]
    assert register["inputs"]["model"]["path"] == "${{parent.jobs.final_train.outputs.model}}"
    command = register["component"]["command"]
    assert command.startswith(f"{CLI} register ${{{{inputs.model}}}} --output "
                              "${{outputs.lineage}}/lineage.json --set ")
    assert load(None, _set_overrides(command)).final.promote is True  # the pipeline's final section reaches it
    assert register["component"]["outputs"] == {"lineage": {"type": "uri_folder"}}
    assert job["outputs"] == {name: {"type": "uri_folder"} for name in ("model", "metrics", "final_config", "lineage")}
    assert job["settings"]["default_compute"] == "azureml:gpu-cluster"
    assert {s: steps[s]["component"]["is_deterministic"] for s in steps if s != "hpo"} == {
        "load_data": True, "select_best": False, "final_train": False, "register_lineage": False}


def test_local_code_is_uploaded_from_its_absolute_path_and_local_data_must_be_registered(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    job, loaded = _build(tmp_path, "final", "--code", "src")
    assert job["code"] == loaded["code"] == str(tmp_path / "src")
    pipeline, _ = _build(tmp_path, "pipeline", "--code", "src")
    assert {name: (step.get("component") or step["trial"])["code"] for name, step in pipeline["jobs"].items()} \
        == dict.fromkeys(STEPS, str(tmp_path / "src"))
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match=r"--data-asset data: a job YAML cannot carry a local folder .*az ml data "
                                          r"create --name resumes --version 1 --type uri_folder --path data"):
        _build(tmp_path, "final", "--data-asset", "data")
    with pytest.raises(ConfigError, match="script_path src/x: not a directory"):
        (tmp_path / "src" / "x").touch()
        _build(tmp_path, "final", "--code", "src/x")


def test_environment_defaults_to_the_azureml_variant_of_the_project_image(tmp_path, monkeypatch):
    monkeypatch.setenv("RESUME_NER_IMAGE", "myacr.azurecr.io/resume-ner:1.2.3")
    out = tmp_path / "final.yaml"
    args = _args(["build", "--kind", "final", "--out", str(out), "--data-asset", "azureml:resumes:1",
                  "--compute", "gpu"])
    args.func(args)
    assert load_job(out).environment.image == "myacr.azurecr.io/resume-ner:1.2.3-azureml"


def test_best_json_is_only_for_the_final_training(tmp_path):
    with pytest.raises(ConfigError, match="--best-json applies to --kind final, not sweep"):
        _build(tmp_path, "sweep", "--best-json", "best.json")


def test_a_job_submitted_directly_uploads_a_local_data_folder_from_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    job = create_final_training_job(ResumeNerConfig(), data_asset="data", environment="azureml:resume-ner:1",
                                    compute_cluster="gpu", aml_experiment_name="exp")
    assert job.inputs["data"].path == str(tmp_path / "data")


def _submit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: FakeMLClient, kind: str, *flags: str) -> int:
    out = tmp_path / f"{kind}.yaml"
    build = _args(["build", "--kind", kind, "--out", str(out), "--overwrite", *TARGET])
    build.func(build)
    monkeypatch.setattr(submit, "workspace_client", lambda *workspace: client)
    args = _args(["submit", "--job", str(out), "--poll-interval", "0", *flags])
    return args.func(args)


def test_submit_waits_for_a_final_training_and_checks_its_results(tmp_path, monkeypatch, capsys):
    files = {"metrics": {"train_result.json": json.dumps({"metric": "f1_micro", "best_metric": 0.7}),
                         "test_metrics.json": json.dumps({"f1_micro": 0.66})}}
    client = FakeMLClient(["Running", "Completed"], files=files)
    assert _submit(tmp_path, monkeypatch, client, "final", "--wait") == 0
    assert client.jobs.submitted[0].command.startswith(TRAIN)
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "fake-job-1: Completed", "  validation f1_micro 0.7, test f1_micro 0.66"]


def test_submit_waits_for_a_sweep_and_checks_its_best_trial(tmp_path, monkeypatch, capsys):
    client = FakeMLClient(["Completed"], children=("Completed", "Completed"),
                          properties={"best_child_run_id": "fake-job-1_1", "score": 0.8})
    assert _submit(tmp_path, monkeypatch, client, "sweep", "--wait") == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        "  best trial fake-job-1_1: val_f1_micro 0.8 (trials: 2 Completed)"


def test_submit_without_wait_returns_once_submitted(tmp_path, monkeypatch, capsys):
    client = FakeMLClient(["Running"])
    assert _submit(tmp_path, monkeypatch, client, "pipeline") == 0
    assert client.jobs.gets == 0 and capsys.readouterr().out.splitlines()[-1] == "submitted fake-job-1: NotStarted"


def test_submit_needs_a_workspace(monkeypatch):
    for name in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg")
    with pytest.raises(ConfigError, match=r"no AzureML workspace: set AZURE_SUBSCRIPTION_ID \(--subscription-id\), "
                                          r"AZUREML_WORKSPACE_NAME \(--workspace\)"):
        submit.workspace_client()


@pytest.mark.parametrize(("content", "argv", "expected"), [
    (None, [], "--job job.yaml: not an AzureML job (No such file or directory"),
    ("command: [", [], "--job job.yaml: not an AzureML job (Error while parsing yaml file"),
    ("kind: nope", [], "--job job.yaml: not an AzureML job (Validation for"),
    ("", ["--wait", "--timeout", "-1"], "--timeout -1 and --poll-interval 30: both must be numbers of seconds"),
], ids=["missing", "not-yaml", "not-a-job", "timeout"])
def test_submit_checks_the_job_file_and_its_options_before_the_workspace(tmp_path, monkeypatch, capsys, content,
                                                                        argv, expected):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "job.yaml").write_text(content)
    if not content and argv:  # a valid job, so that only the option is wrong
        assert main(["azureml", "build", "--kind", "final", "--output", "job.yaml", "--overwrite",
                     *DEFAULT_TARGET]) == 0
        capsys.readouterr()
    monkeypatch.setattr(submit, "workspace_client", lambda *a: pytest.fail("the workspace was contacted"))
    assert main(["azureml", "submit", "--job", "job.yaml", *argv]) == 1
    assert expected in capsys.readouterr().err


# --- the shipped hpo defaults, help text, flags --------------------------------------------------------------

DEFAULT_TARGET = ["--data-asset", "azureml:resumes:1", "--compute", "gpu"]  # no --set: the shipped hpo section
DEFAULT_NOTE = (
    "note: hpo.sampler=tpe maps to AzureML bayesian sampling, which cannot take training.learning_rate "
    "(log_uniform) nor early termination (hpo.pruner=median); using random sampling with median early termination "
    "instead (set hpo.sampler=random to silence this; for bayesian sampling, give training.learning_rate a uniform "
    "or choice and set hpo.pruner=none)")


def _sweep_of(job: dict) -> dict:
    """The sweep of a sweep job, or of a pipeline's hpo step."""
    return job["jobs"]["hpo"] if "jobs" in job else job


@pytest.mark.parametrize("kind", ["sweep", "dry-run", "pipeline"])
def test_the_shipped_hpo_defaults_build_every_sweep_kind_with_one_note(tmp_path, kind, capsys, caplog):
    out = tmp_path / "job.yaml"  # the command of the issue, as a user's first try
    assert main(["azureml", "build", "--kind", kind, "--out", str(out), *DEFAULT_TARGET]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [DEFAULT_NOTE]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the note is not printed twice
    sweep = _sweep_of(_normalised(load_job(out)._to_dict()))
    assert sweep["sampling_algorithm"] == {"type": "random", "seed": 42}
    assert sweep["early_termination"] == {"type": "median_stopping", "evaluation_interval": 1, "delay_evaluation": 1}
    assert sweep["search_space"]["training_learning_rate"]["type"] == "loguniform"


def test_a_bayesian_compatible_space_with_tpe_stays_bayesian_without_a_note(tmp_path, capsys):
    out = tmp_path / "sweep.yaml"
    assert main(["azureml", "build", "--kind", "sweep", "--output", str(out), *DEFAULT_TARGET,
                 "--set", "hpo.search_space={model.dropout: {type: uniform, min: 0.0, max: 0.3}}",
                 "--set", "hpo.pruner=none"]) == 0
    assert capsys.readouterr().err == ""
    sweep = _normalised(load_job(out)._to_dict())
    assert sweep["sampling_algorithm"] == "bayesian" and "early_termination" not in sweep


@pytest.mark.parametrize("overrides, problem", [
    (["hpo.sampler=grid"], "hpo.sampler=grid needs every hpo.search_space entry to be {type: choice"),
    (["hpo.pruner=hyperband"], "hpo.pruner=hyperband: AzureML's bayesian sampling (hpo.sampler=tpe) takes no early "
                               "termination policy; set hpo.pruner=none, or hpo.sampler=random"),
])
def test_an_explicit_choice_azureml_cannot_run_is_still_refused(tmp_path, capsys, overrides, problem):
    argv = ["azureml", "build", "--kind", "sweep", "--output", str(tmp_path / "sweep.yaml"), *DEFAULT_TARGET]
    assert main([*argv, *(item for override in overrides for item in ("--set", override))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the hpo section cannot run as an AzureML sweep of") and problem in err
    assert "note:" not in err and not (tmp_path / "sweep.yaml").exists()


@pytest.mark.parametrize("command", [[], ["build"], ["submit"], ["select-best"]])
def test_help_is_plain_text(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["azureml", *command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "`" not in text and "::" not in text


def test_a_file_output_is_output_and_out_stays_an_alias(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["azureml", "build", "--help"])
    assert "--output FILE, --out FILE" in capsys.readouterr().out
    for flag in ("--output", "--out"):
        out = tmp_path / f"final{flag}.yaml"
        assert main(["azureml", "build", "--kind", "final", flag, str(out), *DEFAULT_TARGET]) == 0
        assert load_job(out).type == "command"


def test_select_best_writes_a_directory_with_output_dir():
    args = _args(["select-best", "--trial-dir", "t", "--param", "model.dropout", "--output-dir", "cfg"])
    assert args.output_dir == Path("cfg")
    assert _args(["select-best", "--trial-dir", "t", "--param", "model.dropout", "--out", "cfg"]).output_dir == \
        Path("cfg")


def test_build_replaces_a_job_file_only_with_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text("an earlier job\n")
    assert main(["azureml", "build", "--kind", "final", "--output", "job.yaml", *DEFAULT_TARGET]) == 1
    assert "job.yaml already exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "job.yaml").read_text() == "an earlier job\n"
    assert main(["azureml", "build", "--kind", "final", "--output", "job.yaml", "--overwrite", *DEFAULT_TARGET]) == 0
