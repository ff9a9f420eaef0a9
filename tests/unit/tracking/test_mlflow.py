"""setup_mlflow and TrackingRun against a local sqlite store; failure handling with a failing client."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from resume_ner import __version__
from resume_ner.config import TrackingConfig
from resume_ner.errors import TrackingError
from resume_ner.tracking import RetryPolicy, TrackingRun, resolve_tracking_uri, setup_mlflow, standard_tags

NO_WAIT = RetryPolicy(attempts=3, backoff_s=0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module (creating its tables takes seconds)."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{db.as_posix()}"


@pytest.fixture
def client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _config(**kwargs) -> TrackingConfig:
    return TrackingConfig(**{"experiment_name": "unit", **kwargs})


# --- URI resolution ------------------------------------------------------------------------------------


def test_uri_precedence_argument_env_config_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configured = TrackingConfig(tracking_uri="sqlite:///from-config.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert resolve_tracking_uri("http://explicit:5000", configured) == "http://explicit:5000"
    assert resolve_tracking_uri(None, configured) == "http://from-env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None, configured) == "sqlite:///from-config.db"
    assert not (tmp_path / "mlruns").exists()
    default = resolve_tracking_uri(None, TrackingConfig())
    assert default == f"sqlite:///{(tmp_path.resolve() / 'mlruns' / 'mlflow.db').as_posix()}"
    assert default.startswith("sqlite:////")  # absolute path
    assert (tmp_path / "mlruns").is_dir()


def test_empty_env_var_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert resolve_tracking_uri(None, TrackingConfig(tracking_uri="sqlite:///x.db")) == "sqlite:///x.db"


def test_env_var_wins_over_config_in_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with setup_mlflow(_config(tracking_uri=f"sqlite:///{tmp_path}/unused.db"), run_name="env") as run:
        assert run.tracking_uri == store
    assert not (tmp_path / "unused.db").exists()


# --- logging -------------------------------------------------------------------------------------------


def test_params_metrics_tags_and_artifacts_are_logged(store: str, client, tmp_path: Path) -> None:
    (tmp_path / "report.txt").write_text("hello")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    with setup_mlflow(_config(), tracking_uri=store, run_name="full", tags={"stage": "test"}) as run:
        run.log_params(
            {"training": {"learning_rate": 5e-5, "epochs": 3}, "note": "x" * 7000, "labels": ["A", "B"], "bad key!": 1}
        )
        for step, f1 in enumerate([0.1, 0.4, 0.7]):
            run.log_metrics({"f1_micro": f1, "per_type": {"NAME": {"f1": f1 / 2}}}, step=step)
        run.log_metrics({"loss": float("nan"), "best": float("inf"), "path": "/tmp/x", "n": None, "ok": 1})
        run.set_tags({"phase": "final", "long": "y" * 9000})
        run.log_artifact(tmp_path / "report.txt")
        run.log_artifacts(tmp_path / "ckpt", artifact_path="checkpoint")
        run.log_dict({"f1": 0.7}, "eval/metrics.json")
    assert run.lost == []
    logged = client.get_run(run.run_id)
    params = logged.data.params
    assert params["training.learning_rate"] == "5e-05" and params["training.epochs"] == "3"
    assert params["labels"] == "['A', 'B']"
    assert len(params["note"]) == 6000  # MLflow's limit
    assert "bad key_" in params
    history = client.get_metric_history(run.run_id, "per_type.NAME.f1")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.05), (1, 0.2), (2, 0.35)]
    assert set(logged.data.metrics) == {"f1_micro", "per_type.NAME.f1", "ok"}  # non-finite and non-numbers dropped
    assert logged.data.tags["phase"] == "final" and logged.data.tags["stage"] == "test"
    assert len(logged.data.tags["long"]) == 8000
    assert logged.info.run_name == "full" and logged.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"report.txt", "checkpoint", "eval"}
    assert [a.path for a in client.list_artifacts(run.run_id, "checkpoint")] == ["checkpoint/config.json"]


def test_artifacts_of_a_sqlite_store_live_beside_the_database(store: str, client) -> None:
    with setup_mlflow(_config(experiment_name="artifacts-beside"), tracking_uri=store) as run:
        pass
    location = client.get_experiment(run.experiment_id).artifact_location
    assert location == (Path(store[len("sqlite:///") :]).parent / "artifacts").as_uri()


def test_numpy_scalars_are_metrics(store: str, client) -> None:
    np = pytest.importorskip("numpy")
    with setup_mlflow(_config(), tracking_uri=store, run_name="numpy") as run:
        run.log_metrics({"a": np.float32(0.5), "b": np.int64(3), "c": np.float64("nan")}, step=1)
    assert client.get_run(run.run_id).data.metrics == {"a": 0.5, "b": 3.0}


def test_changed_param_is_reported_not_raised(store: str, client) -> None:
    with setup_mlflow(_config(), tracking_uri=store, run_name="params") as run:
        run.log_params({"lr": 1, "epochs": 2})
        run.log_params({"lr": 1, "epochs": 3, "seed": 7})  # same lr: fine; changed epochs: lost; seed: new
    assert len(run.lost) == 1 and run.lost[0].startswith("param epochs:")
    assert client.get_run(run.run_id).data.params == {"lr": "1", "epochs": "2", "seed": "7"}


def test_nested_runs_record_their_parent(store: str, client) -> None:
    with setup_mlflow(_config(), tracking_uri=store, run_name="parent") as parent:
        with setup_mlflow(_config(), tracking_uri=store, run_name="child", nested=True) as child:
            child.log_metrics({"f1": 0.5}, step=0)
        explicit = setup_mlflow(_config(), tracking_uri=store, run_name="worker", parent_run_id=parent.run_id)
        explicit.end()
    top = setup_mlflow(_config(), tracking_uri=store, run_name="top", nested=True)  # no parent open: top-level
    top.end()
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(explicit.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert "mlflow.parentRunId" not in client.get_run(top.run_id).data.tags
    assert "mlflow.parentRunId" not in client.get_run(parent.run_id).data.tags


def test_exception_in_block_ends_run_failed_and_propagates(store: str, client) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with setup_mlflow(_config(), tracking_uri=store, run_name="fails") as run:
            raise RuntimeError("boom")
    assert client.get_run(run.run_id).info.status == "FAILED"
    run.log_metrics({"x": 1})  # after the end: a no-op
    run.end("FINISHED")  # a second end: a no-op
    assert client.get_run(run.run_id).info.status == "FAILED"
    with pytest.raises(ValueError, match="status"):
        run.end("DONE")


def test_run_name_falls_back_to_config_then_output_dir(store: str, tmp_path: Path) -> None:
    with setup_mlflow(_config(run_name="from-config"), tracking_uri=store) as run:
        assert run.run_name == "from-config"
    with setup_mlflow(_config(), tracking_uri=store, output_dir=tmp_path / "final-model") as run:
        assert run.run_name.startswith("final-model-")
        assert run.run_name[len("final-model-") :].replace("-", "").isdigit()


def test_disabled_tracking_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with setup_mlflow(TrackingConfig(enabled=False), run_name="off") as run:
        assert not run.enabled and run.run_id is None and run.tracking_uri is None
        run.log_params({"a": 1})
        run.log_metrics({"b": 2}, step=1)
        run.set_tags({"c": 3})
        run.log_artifact(tmp_path / "missing.txt")
        run.log_artifacts(tmp_path / "missing")
        run.log_dict({}, "d.json")
    assert run.lost == []
    assert list(tmp_path.iterdir()) == []  # no mlruns/ created


# --- failures ------------------------------------------------------------------------------------------


class _FailingClient:
    """Stands in for MlflowClient: ``log_batch`` fails ``failures`` times with ``error``, then succeeds."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def set_terminated(self, run_id, status=None):
        pass


def _fake_run(client: _FailingClient, retry: RetryPolicy = NO_WAIT, sleeps: list | None = None) -> TrackingRun:
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return TrackingRun(run_id="r1", tracking_uri="http://fake", experiment_id="0", client=client, retry=retry, sleep=sleep)


def test_transient_failure_is_retried_with_backoff() -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=2, error=MlflowException("server busy"))
    sleeps: list[float] = []
    run = _fake_run(client, RetryPolicy(attempts=3, backoff_s=0.25), sleeps)
    run.log_metrics({"loss": 1.0}, step=3)
    assert client.calls == 3 and sleeps == [0.25, 0.5]
    assert run.lost == []


def test_persistent_failure_is_recorded_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=99, error=MlflowException("connection refused"))
    run = _fake_run(client)
    with caplog.at_level(logging.WARNING):
        run.log_metrics({"loss": 1.0}, step=3)
        run.log_params({"lr": 0.1})
        run.set_tags({"t": "v"})
    assert client.calls == 9
    assert run.lost[0].startswith("metrics step 3: MlflowException: connection refused")
    assert run.lost[1].startswith("params (lr):") and run.lost[2].startswith("tags (t):")
    assert "training continues" in caplog.text


def test_permanent_error_is_not_retried() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    client = _FailingClient(failures=99, error=MlflowException("bad key", error_code=INVALID_PARAMETER_VALUE))
    run = _fake_run(client)
    run.log_metrics({"loss": 1.0}, step=0)
    assert client.calls == 1 and len(run.lost) == 1


def test_retries_stop_at_the_total_time_budget() -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=99, error=MlflowException("down"))
    sleeps: list[float] = []
    run = _fake_run(client, RetryPolicy(attempts=10, backoff_s=4.0, max_total_s=10.0), sleeps)
    run.log_metrics({"loss": 1.0})
    assert sum(sleeps) <= 10.0 and client.calls == len(sleeps) + 1
    assert run.lost and run.lost[0].startswith("metrics:")


def test_missing_artifact_is_recorded(store: str, tmp_path: Path) -> None:
    with setup_mlflow(_config(), tracking_uri=store, run_name="missing-artifact", retry=NO_WAIT) as run:
        run.log_artifact(tmp_path / "nope.bin")
        run.log_artifacts(tmp_path / "nope-dir")
    assert [entry.split(":")[0] for entry in run.lost] == [
        f"artifact {tmp_path / 'nope.bin'}",
        f"artifacts {tmp_path / 'nope-dir'}",
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_gives_disabled_run_or_error_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    run = setup_mlflow(_config(), tracking_uri=uri, retry=RetryPolicy(attempts=2, backoff_s=0.1))
    assert time.monotonic() - started < 10
    assert not run.enabled and run.lost[0].startswith("setup")
    run.log_metrics({"loss": 1.0})  # no-op
    with pytest.raises(TrackingError, match="tracking.enabled=false"):
        setup_mlflow(_config(), tracking_uri=uri, retry=RetryPolicy(attempts=1), required=True)
    import os

    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the temporary override is undone


# --- standard tags -------------------------------------------------------------------------------------


def test_standard_tags_outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    tags = standard_tags(data_fingerprint="abc123", config_hash="cafe")
    assert tags["resume_ner.data_fingerprint"] == "abc123"
    assert tags["resume_ner.config_hash"] == "cafe"
    assert tags["resume_ner.version"] == __version__
    assert "mlflow.source.git.commit" not in tags
    assert "resume_ner.torch_version" in tags  # torch is a dependency
    assert "resume_ner.data_fingerprint" not in standard_tags(data_fingerprint=None, config_hash=None)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_standard_tags_record_the_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    assert standard_tags(data_fingerprint=None, config_hash=None)["mlflow.source.git.commit"] == head
