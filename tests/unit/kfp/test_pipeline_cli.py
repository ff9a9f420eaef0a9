"""``resume-ner pipeline ...`` as a user types it: compile, and upload / submit / schedule of the committed
pipeline against the FAKE KFP server (support/fake_kfp_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.fake_kfp_server import API, FakeKfpServer

from resume_ner.cli.main import main

REPO = Path(__file__).resolve().parents[3]
PACKAGE = str(REPO / "pipelines" / "resume_ner_training.yaml")
network = pytest.mark.network


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    with FakeKfpServer() as fake:
        yield fake


def test_compile_writes_the_five_components_and_the_pipeline(tmp_path, capsys):
    assert main(["pipeline", "compile", "--out-root", str(tmp_path), "--set", "pipeline.image=acr.io/r:9"]) == 0
    names = sorted(p.name for p in (tmp_path / "components").iterdir())
    assert names == ["final_train.yaml", "hpo_trial.yaml", "load_data.yaml", "register_lineage.yaml",
                     "select_best.yaml"]
    spec = yaml.safe_load_all((tmp_path / "pipelines" / "resume_ner_training.yaml").read_text())
    assert next(spec)["pipelineInfo"]["name"] == "resume-ner-training"
    assert "image: acr.io/r:9" in capsys.readouterr().out


def test_run_without_local_says_how_to_run_remotely(capsys):
    assert main(["pipeline", "run"]) == 1
    assert "pipeline submit" in capsys.readouterr().err


@network
def test_submit_sends_the_committed_pipeline_with_typed_parameters(server: FakeKfpServer, capsys):
    code = main(["pipeline", "submit", "--host", server.url, "--package", PACKAGE, "--experiment", "resume-ner",
                 "--param", "data_uri=/mnt/resume-ner/data", "--param", "n_trials=12", "--param", "promote=true",
                 "--param", 'overrides=["hpo.sampler=random"]', "--run-name", "nightly", "--wait"])
    assert code == 0, capsys.readouterr().err
    (request,) = server.requests_to("POST", f"{API}/runs")
    body = request.json
    assert body["display_name"] == "nightly"
    # with a platform spec, kfp sends both: the IR and the Kubernetes settings
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "resume-ner-training"
    executors = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-final-train"]["tolerations"] == [{"tolerationJson": {"taskOutputParameter": {
        "outputParameterKey": "final_tolerations", "producerTask": "plan-run"}}}]
    assert body["runtime_config"]["parameters"] == {"data_uri": "/mnt/resume-ner/data", "n_trials": 12,
                                                    "promote": True, "overrides": ["hpo.sampler=random"]}
    assert "SUCCEEDED" in capsys.readouterr().out


@network
def test_submit_wait_exits_1_when_the_run_fails(server: FakeKfpServer, capsys):
    server.run_final_state, server.run_error = "FAILED", "load-data: bad.jsonl:1: span end 99 beyond the text"
    code = main(["pipeline", "submit", "--host", server.url, "--package", PACKAGE, "--experiment", "e",
                 "--param", "data_uri=/x", "--wait"])
    assert code == 1
    assert "span end 99" in capsys.readouterr().err


@network
def test_schedule_and_upload(server: FakeKfpServer, capsys):
    assert main(["pipeline", "schedule", "--host", server.url, "--package", PACKAGE, "--experiment", "weekly",
                 "--cron", "0 0 2 * * 1", "--no-catchup", "--param", "data_uri=/mnt/d"]) == 0
    (request,) = server.requests_to("POST", f"{API}/recurringruns")
    assert request.json["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * 1"
    assert request.json["max_concurrency"] == 1 and request.json["no_catchup"] is True
    assert request.json["runtime_config"]["parameters"] == {"data_uri": "/mnt/d"}

    assert main(["pipeline", "upload", "--host", server.url, "--package", PACKAGE]) == 0
    assert main(["pipeline", "upload", "--host", server.url, "--package", PACKAGE, "--version", "v2"]) == 0
    out = capsys.readouterr().out
    assert "created pipeline 'resume-ner-training'" in out and "new version" in out and "'v2'" in out


@network
def test_a_five_field_cron_is_refused_before_any_request(server: FakeKfpServer, capsys):
    assert main(["pipeline", "schedule", "--host", server.url, "--package", PACKAGE, "--experiment", "w",
                 "--cron", "0 2 * * 1", "--param", "data_uri=/d"]) == 1
    assert "0 0 2 * * 1" in capsys.readouterr().err
    assert not server.requests_to("POST", f"{API}/recurringruns")


@network
@pytest.mark.parametrize(("argv", "expected"), [
    (["schedule", "--experiment", "w", "--cron", "0 2 * * 1"], "0 0 2 * * 1"),
    (["schedule", "--experiment", "w", "--cron", "0 0 2 * * 1", "--max-concurrency", "0"], "max_concurrency 0"),
    (["submit", "--experiment", "w", "--param", "nope=1"], "unknown run parameter(s) 'nope'"),
    (["submit", "--experiment", "w", "--param", "n_trials=many"], "expected an integer"),
    (["submit", "--experiment", "w", "--wait", "--timeout", "-5"], "--timeout -5"),
    (["upload", "--package", "missing.yaml"], "resume-ner pipeline compile"),
], ids=["cron", "concurrency", "parameter", "type", "timeout", "package"])
def test_every_argument_is_checked_before_the_server_is_contacted(server: FakeKfpServer, capsys, argv, expected):
    """Even with a server that answers, a bad argument makes no request at all (not even the health probe)."""
    command, rest = argv[0], argv[1:]
    package = [] if "--package" in rest else ["--package", PACKAGE]
    assert main(["pipeline", command, "--host", server.url, *package, *rest]) == 1
    assert expected in capsys.readouterr().err
    assert server.requests == []


def test_an_unreachable_server_is_reported_once_without_retry_warnings(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "resume_ner.cli.main", "pipeline", "submit", "--host",
                           f"http://127.0.0.1:{port}", "--package", PACKAGE, "--experiment", "e", "--param",
                           "data_uri=/d"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert "cannot reach the KFP API" in done.stderr
    assert "Retrying" not in done.stderr and "urllib3" not in done.stderr, done.stderr
