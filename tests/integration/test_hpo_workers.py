"""``resume-ner hpo worker`` processes sharing one sqlite study: exact trial count, recovery from SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

pytestmark = pytest.mark.timeout(600)

STUDY = "shared"


@pytest.fixture
def worker_setup(tiny_backbone: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """(the ``hpo worker`` command line without --n-trials, the sqlite storage) for the tiny model."""
    from resume_ner.data.synth import write_synthetic_resumes

    data = write_synthetic_resumes(tmp_path / "data", 20, seed=3)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    sections = {
        "model.yaml": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "train.yaml": {"epochs": 3, "batch_size": 8, "num_threads": 1, "warmup_ratio": 0.0, "random_seed": 13},
        "data.yaml": {"validation_fraction": 0.2, "test_fraction": 0.0},
        "tracking.yaml": {"enabled": False},
        "hpo.yaml": {"sampler": "random", "pruner": "none", "metric": "loss", "direction": "minimize",
                     "heartbeat_interval": 1, "grace_period": 3, "failed_trial_retries": 1,
                     "search_space": {"training.learning_rate": {"type": "log_uniform", "min": 1.0e-4, "max": 3.0e-3}}},
    }
    for name, content in sections.items():
        (config_dir / name).write_text(yaml.safe_dump(content))
    storage = tmp_path / "study.db"
    command = [sys.executable, "-m", "resume_ner.cli.main", "hpo", "worker", "--config-dir", str(config_dir),
               "--study", STUDY, "--storage", str(storage), "--data", str(data), "--output-dir", str(tmp_path / "out")]
    return command, storage


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def _trials(storage: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{storage}").trials
    except KeyError:  # not created yet
        return []


def test_two_workers_finish_exactly_n_trials(worker_setup, tmp_path):
    command, storage = worker_setup
    logs = [open(tmp_path / f"worker-{i}.log", "w") for i in range(2)]
    workers = [subprocess.Popen([*command, "--n-trials", "4", "--set", "training.epochs=2", "--worker-index", str(i)],
                                stdout=log, stderr=subprocess.STDOUT, env=_env()) for i, log in enumerate(logs)]
    codes = [worker.wait(timeout=500) for worker in workers]
    for log in logs:
        log.close()
    output = "\n".join((tmp_path / f"worker-{i}.log").read_text()[-3000:] for i in range(2))
    assert codes == [0, 0], output

    trials = _trials(storage)
    numbers = [trial.number for trial in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4, output
    rates = [t.params["training.learning_rate"] for t in finished]
    assert len(set(rates)) == 4  # workers started together are seeded apart: no setting is trained twice
    assert all(t.state.name != "RUNNING" for t in trials)
    extra = [t for t in trials if t.state.name == "FAIL"]  # only a trial started at the very same moment
    assert all(t.user_attrs["error"].startswith("not run:") for t in extra)


def test_a_killed_workers_trial_is_failed_and_rerun_by_the_next_worker(worker_setup, tmp_path):
    command, storage = worker_setup
    with open(tmp_path / "killed.log", "w") as log:
        victim = subprocess.Popen([*command, "--n-trials", "2"], stdout=log, stderr=subprocess.STDOUT, env=_env(),
                                  start_new_session=True)
        deadline = time.monotonic() + 300
        while not any(t.state.name == "RUNNING" for t in _trials(storage)):
            assert victim.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
        time.sleep(1.0)  # well inside its training
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    killed = next(t for t in _trials(storage) if t.state.name == "RUNNING")

    rerun = subprocess.run([*command, "--n-trials", "2"], capture_output=True, text=True, timeout=500, env=_env())
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    trials = {t.number: t for t in _trials(storage)}
    assert all(t.state.name != "RUNNING" for t in trials.values())
    assert trials[killed.number].state.name == "FAIL"
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == killed.params  # the same configuration, trained again
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 2
