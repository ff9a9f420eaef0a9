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
from resume_ner.config import TrackingConfig, load
from resume_ner.errors import TrackingError
from resume_ner.tracking import RetryPolicy, TrackingRun, resolve_tracking_uri, setup_mlflow, standard_tags
from resume_ner.tracking.mlflow import given_tracking_uri, summarize_lost

NO_WAIT = RetryPolicy(attempts=3, backoff_s=0.0)


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


def test_uri_precedence_argument_config_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One rule: what is given for the run > the config's URI > the environment (for a config made in code; a loaded
    config already holds it, see the next test) > the local default."""
    monkeypatch.chdir(tmp_path)
    configured = TrackingConfig(tracking_uri="sqlite:///from-config.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert resolve_tracking_uri("http://explicit:5000", configured) == "http://explicit:5000"
    assert resolve_tracking_uri(None, configured) == "sqlite:///from-config.db"
    assert resolve_tracking_uri(None, TrackingConfig()) == "http://from-env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert given_tracking_uri(None, TrackingConfig()) is None
    assert not (tmp_path / "mlruns").exists()
    default = resolve_tracking_uri(None, TrackingConfig())
    assert default == f"sqlite:///{(tmp_path.resolve() / 'mlruns' / 'mlflow.db').as_posix()}"
    assert default.startswith("sqlite:////")  # absolute path
    assert (tmp_path / "mlruns").is_dir()


def test_a_loaded_config_puts_the_environment_between_the_files_and_the_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "tracking.yaml").write_text("tracking_uri: sqlite:///from-file.db\n", encoding="utf-8")
    assert load(config_dir).tracking.tracking_uri == "sqlite:///from-file.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", " http://from-env:5000 ")
    assert resolve_tracking_uri(None, load(config_dir).tracking) == "http://from-env:5000"  # wins over the file
    assert load(None).tracking.tracking_uri == "http://from-env:5000"  # and over the defaults
    typed = load(config_dir, ["tracking.tracking_uri=http://typed:5000"])  # --set, a pipeline parameter
    assert resolve_tracking_uri(None, typed.tracking) == "http://typed:5000"
    assert resolve_tracking_uri("http://flag:5000", typed.tracking) == "http://flag:5000"  # --tracking-uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")  # blank: not set
    assert load(config_dir).tracking.tracking_uri == "sqlite:///from-file.db"


def test_empty_env_var_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert given_tracking_uri(None, TrackingConfig()) is None


def test_the_environment_wins_over_the_config_files_in_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "tracking.yaml").write_text(f"tracking_uri: sqlite:///{tmp_path}/unused.db\n", encoding="utf-8")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with setup_mlflow(load(config_dir).tracking, run_name="env") as run:
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
    """Stands in for MlflowClient: its calls fail ``failures`` times with ``error``, then succeed; ``sent`` lists
    what went through (``"step N"`` of a metrics batch, ``"params"``, ``"tags"``, ``"end STATUS"``)."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls, self.sent = failures, error, 0, []

    def _call(self, what: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        self.sent.append(what)

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        self._call(f"step {metrics[0].step}" if metrics else "params" if params else "tags")

    def set_terminated(self, run_id, status=None):
        self._call(f"end {status}")


class _Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _fake_run(client: _FailingClient, retry: RetryPolicy = NO_WAIT, sleeps: list | None = None,
              clock: _Clock | None = None) -> TrackingRun:
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return TrackingRun(run_id="r1", tracking_uri="http://fake", experiment_id="0", client=client, retry=retry, sleep=sleep,
                       clock=clock or _Clock())


def test_transient_failure_is_retried_with_backoff() -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=2, error=MlflowException("server busy"))
    sleeps: list[float] = []
    run = _fake_run(client, RetryPolicy(attempts=3, backoff_s=0.25), sleeps)
    run.log_metrics({"loss": 1.0}, step=3)
    assert client.calls == 3 and sleeps == [0.25, 0.5]
    assert run.lost == []


def test_persistent_failure_is_queued_then_recorded_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=99, error=MlflowException("connection refused"))
    run = _fake_run(client, RetryPolicy(attempts=3, backoff_s=0.0, drain_s=0.0))
    with caplog.at_level(logging.WARNING):
        run.log_metrics({"loss": 1.0}, step=3)
        run.log_params({"lr": 0.1})  # queued behind the failed call: not tried until its wait is over
        run.set_tags({"t": "v"})
        assert client.calls == 3 and run.queued == 2 + 1 and run.lost == []
        run.end()  # one more try of the queue's first call, then what is left is lost
    assert client.calls == 3 + 1
    assert run.lost[0].startswith("metrics step 3: MlflowException: connection refused")
    assert run.lost[1].startswith("params (lr):") and run.lost[2].startswith("tags (t):")
    assert run.lost[3].startswith("end FINISHED:") and run.queued == 0
    assert summarize_lost(run.lost) == "params, tags, metrics (step 3), run end (FINISHED)"
    assert "training continues" in caplog.text and "4 queued call(s) lost" in caplog.text


def test_queued_calls_are_sent_in_order_when_the_server_is_back() -> None:
    from mlflow.exceptions import MlflowException

    clock = _Clock()
    client = _FailingClient(failures=4, error=MlflowException("connection refused"))
    run = _fake_run(client, RetryPolicy(attempts=3, backoff_s=0.0, queue_retry_s=2.0), clock=clock)
    run.log_metrics({"loss": 1.0}, step=1)  # 3 failed attempts: queued
    run.log_metrics({"loss": 0.9}, step=2)  # queued without a try
    clock.now += 2.0
    run.log_metrics({"loss": 0.8}, step=3)  # the queue is tried once (4th failure): wait doubles to 4 s
    assert client.calls == 4 and run.queued == 3
    clock.now += 2.0
    run.log_metrics({"loss": 0.7}, step=4)  # still waiting
    assert client.calls == 4 and run.queued == 4
    clock.now += 2.0
    run.log_metrics({"loss": 0.6}, step=5)  # the server is back: the queue goes first, in order
    assert client.sent == ["step 1", "step 2", "step 3", "step 4", "step 5"]
    assert run.queued == 0 and run.lost == []


def test_end_waits_for_the_server_to_come_back() -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=8, error=MlflowException("connection refused"))
    sleeps: list[float] = []
    run = _fake_run(client, RetryPolicy(attempts=2, backoff_s=0.0, queue_retry_s=1.0, queue_retry_max_s=4.0,
                                        drain_s=30.0), sleeps)
    run.log_metrics({"loss": 1.0}, step=1)
    run.end()
    assert client.sent == ["step 1", "end FINISHED"] and run.lost == [] and run.status == "FINISHED"
    assert sleeps == [0.0, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]  # 1 retry at logging, then the queue at the end


def test_killed_run_does_not_wait_for_the_server() -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=99, error=MlflowException("connection refused"))
    sleeps: list[float] = []
    run = _fake_run(client, RetryPolicy(attempts=1, drain_s=600.0), sleeps)
    run.log_metrics({"loss": 1.0}, step=1)
    run.end("KILLED")
    assert sleeps == [] and [entry.split(":")[0] for entry in run.lost] == ["metrics step 1", "end KILLED"]


def test_a_full_queue_loses_new_calls() -> None:
    from mlflow.exceptions import MlflowException

    client = _FailingClient(failures=99, error=MlflowException("connection refused"))
    run = _fake_run(client, RetryPolicy(attempts=1, queue_limit=2))
    for step in range(3):
        run.log_metrics({"loss": 1.0}, step=step)
    assert run.queued == 2 and len(run.lost) == 1 and run.lost[0].startswith("metrics step 2: not logged")


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
    run = _fake_run(client, RetryPolicy(attempts=10, backoff_s=4.0, max_total_s=10.0, drain_s=0.0), sleeps)
    run.log_metrics({"loss": 1.0})
    assert sum(sleeps) <= 10.0 and client.calls == len(sleeps) + 1
    assert run.lost == [] and run.queued == 1
    run.end()
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
