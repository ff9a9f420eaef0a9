"""What a local run in containers mounts and where its MLflow store goes (the engine itself: tests/containers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resume_ner.config import load
from resume_ner.errors import ConfigError
from resume_ner.kfp.container_runner import _host_paths, _local_store, container_tracking_uri


def test_every_host_path_of_a_run_is_mounted_once(tmp_path: Path, tiny_backbone: Path):
    output = tmp_path / "run"
    data = tmp_path / "corpus" / "resumes.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    config = load(None, [f"model.backbone={tiny_backbone}"])
    paths = _host_paths(config, data, output, f"sqlite:///{output}/mlruns/mlflow.db")
    assert paths == [(output, False), (data.parent, True), (tiny_backbone.resolve(), True)]  # the store is inside
    inside = _host_paths(load(), output / "data" / "resumes.jsonl", output, "http://127.0.0.1:5000")
    assert inside == [(output, False)]  # data under the output directory, a packaged backbone, a server


def test_the_default_store_of_a_run_in_containers_is_in_its_output_directory(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = container_tracking_uri(load().tracking, tmp_path / "run")
    assert uri == f"sqlite:///{tmp_path / 'run' / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert container_tracking_uri(load().tracking, tmp_path / "run") == "http://127.0.0.1:5000"


def test_a_relative_local_store_is_refused(tmp_path: Path):
    assert _local_store("http://mlflow:5000") is None
    assert _local_store(f"sqlite:///{tmp_path}/m/mlflow.db") == tmp_path / "m"
    with pytest.raises(ConfigError, match=r"relative to this directory.*sqlite:////ABSOLUTE/PATH"):
        _local_store("sqlite:///mlruns/mlflow.db")
