"""Workers that start at the same moment open one MLflow parent run per study, on every storage that can be shared:
a sqlite file, a journal file and a PostgreSQL database (a real server, started here when PostgreSQL is installed).

The CI's container tier once saw a pipeline's two HPO workers each record a parent run of their own: the lineage
listed 2 of the run's 4 trials. Here the window between reading the study's record and writing a new one is widened
(a slow MLflow run creation), so the race is certain without the turn (checked first), and the turn must close it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from resume_ner.config import HpoConfig, config_from_dict
from resume_ner.hpo import parent_run
from resume_ner.hpo.locks import parent_run_turn
from resume_ner.hpo.study import resolve_storage, storage_file

pytestmark = pytest.mark.timeout(300)

STUDY = "together"
WORKERS = 3
PG_CTL = shutil.which("pg_ctl")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication), run as the postgres user under root."""
    if PG_CTL is None:
        pytest.skip("PostgreSQL is not installed here (pg_ctl)")
    home = Path(tempfile.mkdtemp(prefix="resume-ner-pg-"))  # pytest's tmp dirs are root's only
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = home / "data", _free_port()
    try:
        subprocess.run([*as_postgres, str(Path(PG_CTL).with_name("initdb")), "-D", str(data), "-A", "trust", "-U",
                        "postgres"], check=True, capture_output=True)
        subprocess.run([*as_postgres, PG_CTL, "-D", str(data), "-w", "-l", str(home / "log"), "-o",
                        f"-h 127.0.0.1 -p {port} -k {home}", "start"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, PG_CTL, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage_for(request) -> Callable[[Path], str]:
    """The storage of a fresh study in a directory: a sqlite or journal file there, or the PostgreSQL server."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")

        def fresh(_: Path) -> str:
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=STUDY, storage=url)
            return url

        return fresh
    suffix = {"sqlite": "db", "journal": "log"}[request.param]
    return lambda directory: str(directory / f"{STUDY}.{suffix}")


def _open_together(storage_spec: str, tmp_path: Path, monkeypatch, *, turn: bool) -> list[str]:
    """The parent run ids that WORKERS threads, each with its own storage and study objects, open at once."""
    from mlflow import MlflowClient

    tmp_path.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store exists before the workers race for the parent run
    config = config_from_dict({"tracking": {"enabled": True, "tracking_uri": uri, "experiment_name": "turns"}})
    hpo = HpoConfig(study_name=STUDY)
    optuna.create_study(storage=resolve_storage(storage_spec, tmp_path, STUDY, hpo), study_name=STUDY,
                        load_if_exists=True)
    real_setup = parent_run.setup_mlflow

    def slow_setup(*args, **kwargs):  # the read and the write of the study's record lie this far apart
        run = real_setup(*args, **kwargs)
        threading.Event().wait(0.5)
        return run

    monkeypatch.setattr(parent_run, "setup_mlflow", slow_setup)
    start = threading.Barrier(WORKERS)
    opened: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            storage = resolve_storage(storage_spec, tmp_path, STUDY, hpo)
            study = optuna.load_study(study_name=STUDY, storage=storage)
            start.wait()
            study_file = storage_file(storage_spec, tmp_path, STUDY)
            with parent_run_turn(storage, study_file, STUDY) if turn else contextlib.nullcontext():
                run = parent_run.open_parent_run(config, study)
            opened.append(run.run_id)
            run.end("FINISHED")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return opened


def test_workers_started_together_record_one_parent_run_in_the_study_turn(storage_for, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    untimed = _open_together(storage_for(tmp_path / "without"), tmp_path / "without", monkeypatch, turn=False)
    assert len(set(untimed)) > 1  # the race this guards against: each worker recorded a parent of its own

    storage = storage_for(tmp_path / "with")
    opened = _open_together(storage, tmp_path / "with", monkeypatch, turn=True)
    assert len(opened) == WORKERS and len(set(opened)) == 1, opened
    reloaded = resolve_storage(storage, tmp_path / "with", STUDY, HpoConfig(study_name=STUDY), create=False)
    study = optuna.load_study(study_name=STUDY, storage=reloaded)
    assert study.user_attrs["mlflow_parent_run_id"] == opened[0]
    client = MlflowClient(f"sqlite:///{tmp_path / 'with' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("turns")
    assert [run.info.run_id for run in client.search_runs([experiment.experiment_id])] == [opened[0]]

