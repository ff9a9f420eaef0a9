"""Two ``resume-ner hpo worker`` processes share one study; one of them is SIGKILLed mid-trial again and again, and a
replacement worker is started after each kill.

Real processes and signals, a sqlite Optuna storage (the storage with trial heartbeats: a killed worker's trial goes
stale after ``hpo.grace_period`` s) and a sqlite MLflow store. The kills alternate between a fresh trial and the
re-run of the trial killed just before (with ``hpo.failed_trial_retries=1`` that re-run is not re-run again), each
after the trial's MLflow run is recorded, at a seeded point: as soon as it is, or after the first epoch. At the end
the study has exactly ``n_trials`` finished trials, none RUNNING or WAITING, unique trial numbers, the only failures
are the killed trials (and any "not run" twin of a trial started at the same moment), and every MLflow run is
ended, the killed trials' runs FAILED or KILLED.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STUDY = "killed-workers"
EXPERIMENT = "killed-workers"
N_TRIALS = 4
KILLS = 4  # fresh trial, its re-run, fresh trial, its re-run
SEED = 20261201
POLL_S = 0.2
KILL_WAIT_S = 900  # overall bound of the polling for one kill (a hung sweep), not a timing assertion
FINISH_WAIT_S = 900
SETTINGS = ("training.epochs=3", "hpo.heartbeat_interval=1", "hpo.grace_period=10", "hpo.failed_trial_retries=1")


@pytest.fixture
def sweep(tiny_backbone: Path, tmp_path: Path) -> tuple[list[str], str, str]:
    """(the ``hpo worker`` command line without --output-dir / --worker-index, the Optuna URL, the MLflow URI)."""
    from mlflow import MlflowClient

    from resume_ner.data.synth import write_synthetic_resumes

    data = write_synthetic_resumes(tmp_path / "data", 20, seed=3)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    sections = {
        "model.yaml": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "train.yaml": {"batch_size": 8, "num_threads": 1, "warmup_ratio": 0.0, "random_seed": 13},
        "data.yaml": {"validation_fraction": 0.2, "test_fraction": 0.0},
        "tracking.yaml": {"enabled": True, "tracking_uri": tracking_uri, "experiment_name": EXPERIMENT,
                          "log_checkpoint": False},
        "hpo.yaml": {"sampler": "random", "pruner": "none", "metric": "loss", "direction": "minimize",
                     "search_space": {"training.learning_rate": {"type": "log_uniform", "min": 1.0e-4, "max": 3.0e-3}}},
    }
    for name, content in sections.items():
        (config_dir / name).write_text(yaml.safe_dump(content))
    (tmp_path / "mlflow").mkdir()
    MlflowClient(tracking_uri).search_experiments()  # the store's tables, before workers race to create them
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.storages.RDBStorage(url)  # likewise the study storage's tables
    command = [sys.executable, "-m", "resume_ner.cli.main", "hpo", "worker", "--config-dir", str(config_dir),
               "--study", STUDY, "--storage", url, "--data", str(data), "--n-trials", str(N_TRIALS)]
    for setting in SETTINGS:
        command += ["--set", setting]
    return command, url, tracking_uri


class _Workers:
    """The worker processes, each with its own output directory (so a trial's ``checkpoint`` names its worker)."""

    def __init__(self, command: list[str], root: Path) -> None:
        self.command, self.root = command, root
        self.live: dict[int, subprocess.Popen] = {}
        self.exited: dict[int, int] = {}
        self.killed: set[int] = set()
        self.started = 0

    def start(self) -> None:
        index = self.started
        self.started += 1
        out = self.root / f"worker-{index}"
        out.mkdir(parents=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(out / "worker.log", "w") as log:
            self.live[index] = subprocess.Popen(
                [*self.command, "--output-dir", str(out), "--worker-index", str(index)], stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def worker_of(self, trial: optuna.trial.FrozenTrial) -> int | None:
        """The live worker training ``trial``, once it has recorded its MLflow run (its checkpoint comes next)."""
        checkpoint = Path(trial.user_attrs.get("checkpoint", "/"))
        for index, process in self.live.items():
            if checkpoint.parent.parent.parent == self.root / f"worker-{index}" and process.poll() is None:
                return index
        return None

    def kill(self, index: int) -> None:
        process = self.live.pop(index)
        self.killed.add(index)
        os.killpg(process.pid, signal.SIGKILL)
        self.exited[index] = process.wait(timeout=60)

    def reap(self) -> None:
        for index, process in list(self.live.items()):
            if process.poll() is not None:
                self.exited[index] = self.live.pop(index).returncode

    def stop_all(self) -> None:
        for index in list(self.live):
            self.kill(index)

    def logs(self) -> str:
        return "\n".join(f"--- worker {i}\n" + (self.root / f"worker-{i}" / "worker.log").read_text()[-2500:]
                         for i in range(self.started))


def _trials(storage: optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(STUDY))
    except KeyError:  # not created yet
        return []


def _target(trials: list[optuna.trial.FrozenTrial], workers: _Workers, retry_of: int | None, after_epoch: bool,
            rng: random.Random) -> tuple[int, optuna.trial.FrozenTrial] | None:
    """A live worker and its RUNNING trial that fit the plan (a fresh trial, or the re-run of ``retry_of``)."""
    fits = []
    for trial in trials:
        index = workers.worker_of(trial) if trial.state.name == "RUNNING" else None
        if index is None or trial.system_attrs.get("failed_trial") != retry_of:
            continue
        if not after_epoch or trial.intermediate_values:
            fits.append((index, trial))
    return rng.choice(sorted(fits, key=lambda fit: fit[0])) if fits else None


def test_killed_workers_leave_exactly_n_trials_and_no_open_run(sweep, tmp_path, reliability_counter):
    from mlflow import MlflowClient

    command, url, tracking_uri = sweep
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    rng = random.Random(SEED)
    workers = _Workers(command, tmp_path / "out")
    killed: list[optuna.trial.FrozenTrial] = []
    try:
        for _ in range(2):
            workers.start()
        while len(killed) < KILLS:
            retry_of = killed[-1].number if len(killed) % 2 else None
            after_epoch = rng.random() < 0.5
            deadline = time.monotonic() + KILL_WAIT_S
            while (found := _target(_trials(storage), workers, retry_of, after_epoch, rng)) is None:
                workers.reap()
                assert workers.live and time.monotonic() < deadline, (
                    f"kill {len(killed) + 1}: no worker trains a trial to kill (exits {workers.exited})\n"
                    + workers.logs())
                time.sleep(POLL_S)
            index, trial = found
            workers.kill(index)
            reliability_counter("kills", 1)
            after = next(t for t in _trials(storage) if t.number == trial.number)
            assert after.state.name == "RUNNING", f"trial {trial.number} ended before the signal landed"
            killed.append(trial)
            workers.start()
            reliability_counter("restarts", 1)
        deadline = time.monotonic() + FINISH_WAIT_S
        while workers.live:
            workers.reap()
            assert time.monotonic() < deadline, "the workers did not finish\n" + workers.logs()
            time.sleep(1.0)
    finally:
        workers.stop_all()
    logs = workers.logs()
    assert all(code == 0 for index, code in workers.exited.items() if index not in workers.killed), (
        workers.exited, logs)

    trials = _trials(storage)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), numbers
    states = {t.number: t.state.name for t in trials}
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == N_TRIALS, (states, logs)
    assert not [n for n, s in states.items() if s in ("RUNNING", "WAITING")], (states, logs)
    failed = {t.number for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("error", "").startswith(
        "not run:")}
    assert failed == {t.number for t in killed}, (states, logs)
    for fresh, rerun in zip(killed[0::2], killed[1::2]):  # a killed re-run is out of retries: not run again
        assert [t.number for t in trials if t.system_attrs.get("failed_trial") == fresh.number] == [rerun.number]

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {run.info.run_id: run for run in client.search_runs([experiment.experiment_id], max_results=1000)}
    for trial in killed:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status in ("FAILED", "KILLED"), (trial.number, run.info.status)
        assert run.data.tags["resume_ner.trial_number"] == str(trial.number)
    assert not [run.info.run_name for run in runs.values() if run.info.status == "RUNNING"], logs
