"""Studies: storages by name, samplers and pruners by config, refusal of an incompatible study, best trial."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest

from resume_ner.config import HpoConfig, ResumeNerConfig
from resume_ner.errors import ConfigError
from resume_ner.hpo.search_space import parse_search_space
from resume_ner.hpo.select import select_best
from resume_ner.hpo.study import (
    create_or_load_study,
    create_pruner,
    create_sampler,
    load_existing_study,
    resolve_storage,
)

SPACE = parse_search_space({"training.batch_size": {"type": "choice", "values": [8, 16]}}, ResumeNerConfig())


def _hpo(**settings) -> HpoConfig:
    return HpoConfig(study_name="s", **settings)


def test_storage_kinds_follow_the_name(tmp_path):
    hpo = _hpo(heartbeat_interval=7, grace_period=21, failed_trial_retries=2)
    default = resolve_storage(None, tmp_path / "out", "s", hpo)
    assert isinstance(default, optuna.storages.RDBStorage)
    assert default.url == f"sqlite:///{(tmp_path / 'out' / 'hpo' / 's.db').as_posix()}"
    assert default.heartbeat_interval == 7 and default.grace_period == 21
    assert default.heartbeat_stale_trial_callback._max_retry == 2
    for name in ("a.db", "b.sqlite", "c.sqlite3"):
        assert resolve_storage(str(tmp_path / name), tmp_path, "s", hpo).url.endswith(name)
    for name in ("a.log", "b.journal", "c.jsonl"):
        assert isinstance(resolve_storage(str(tmp_path / name), tmp_path, "s", hpo), optuna.storages.JournalStorage)
    url = resolve_storage(f"sqlite:///{tmp_path}/x.db", tmp_path, "s", hpo)
    assert isinstance(url, optuna.storages.RDBStorage) and url.heartbeat_interval == 7
    with pytest.raises(ConfigError, match="expected a sqlite file"):
        resolve_storage(str(tmp_path / "study.txt"), tmp_path, "s", hpo)
    with pytest.raises(ConfigError, match="no such file"):
        resolve_storage(str(tmp_path / "missing.db"), tmp_path, "s", hpo, create=False)


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None, reason="psycopg 3 is installed here")
def test_a_postgresql_url_without_a_driver_names_the_one_the_project_installs(tmp_path):
    # SQLAlchemy 2.1 reads postgresql:// with psycopg 3; the project's images carry psycopg2 (the cluster tier found
    # the MLflow server and Optuna failing on the manifests' old postgresql:// URLs)
    with pytest.raises(ConfigError, match=r"postgresql\+psycopg2://") as raised:
        resolve_storage("postgresql://optuna:s3cret@127.0.0.1:1/optuna", tmp_path, "s", _hpo())
    assert "s3cret" not in str(raised.value)


def test_samplers_and_pruners_come_from_the_config():
    assert isinstance(create_sampler(_hpo(sampler="tpe"), SPACE), optuna.samplers.TPESampler)
    assert isinstance(create_sampler(_hpo(sampler="random"), SPACE), optuna.samplers.RandomSampler)
    assert isinstance(create_sampler(_hpo(sampler="grid"), SPACE), optuna.samplers.GridSampler)
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ConfigError, match="needs the 'cmaes' package"):
            create_sampler(_hpo(sampler="cmaes"), SPACE)
    else:
        assert isinstance(create_sampler(_hpo(sampler="cmaes"), SPACE), optuna.samplers.CmaEsSampler)
    median = create_pruner(_hpo(pruner="median", n_startup_trials=3, n_warmup_epochs=2))
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert median._n_startup_trials == 3 and median._n_warmup_steps == 2
    assert isinstance(create_pruner(_hpo(pruner="hyperband")), optuna.pruners.HyperbandPruner)
    assert isinstance(create_pruner(_hpo(pruner="successive_halving")), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(create_pruner(_hpo(pruner="none")), optuna.pruners.NopPruner)


def test_seeded_sampler_repeats_a_fresh_study_and_draws_new_values_when_resumed(tmp_path):
    space = parse_search_space({"model.dropout": {"type": "uniform", "min": 0.0, "max": 0.3}}, ResumeNerConfig())

    def draws(path, n):
        storage = resolve_storage(str(tmp_path / path), tmp_path, "s", _hpo())
        study = create_or_load_study(_hpo(sampler="random", seed=3), storage, space)
        study.optimize(lambda trial: space.suggest(trial)["model.dropout"], n_trials=n)
        return [t.params["model.dropout"] for t in study.trials]

    first = draws("a.db", 3)
    assert draws("b.db", 3) == first
    resumed = draws("a.db", 3)
    assert resumed[:3] == first and not set(resumed[3:]) & set(first)


def test_a_study_of_another_metric_direction_pruning_metric_or_dataset_is_refused(tmp_path):
    storage = resolve_storage(str(tmp_path / "s.db"), tmp_path, "s", _hpo())
    study = create_or_load_study(_hpo(), storage, SPACE, data_fingerprint="aaa")
    assert study.user_attrs["metric"] == "f1_micro" and study.user_attrs["data_fingerprint"] == "aaa"
    with pytest.raises(ConfigError, match="metric 'f1_micro' \\(now 'loss'\\)"):
        create_or_load_study(_hpo(metric="loss", direction="minimize"), storage, SPACE, data_fingerprint="aaa")
    assert study.user_attrs["pruning_metric"] == "loss"
    with pytest.raises(ConfigError, match="pruning_metric 'loss' \\(now 'f1_micro'\\)"):
        create_or_load_study(_hpo(pruning_metric="f1_micro"), storage, SPACE, data_fingerprint="aaa")
    with pytest.raises(ConfigError, match="run on dataset aaa but this data is bbb"):
        create_or_load_study(_hpo(), storage, SPACE, data_fingerprint="bbb")
    with pytest.raises(ConfigError, match="hpo.direction=minimize but hpo.metric=f1_micro"):
        create_or_load_study(_hpo(direction="minimize"), storage, SPACE)
    assert create_or_load_study(_hpo(), storage, SPACE, data_fingerprint="aaa").study_name == "s"


def test_a_journal_file_holds_a_study_like_sqlite(tmp_path):
    path = str(tmp_path / "s.journal")
    study = create_or_load_study(_hpo(), resolve_storage(path, tmp_path, "s", _hpo()), SPACE, data_fingerprint="f")
    study.optimize(lambda trial: SPACE.suggest(trial)["training.batch_size"] / 10, n_trials=2)
    best = select_best(path, "s")
    assert best.value == max(t.value for t in study.trials) and best.data_fingerprint == "f"


def test_select_best_breaks_ties_by_the_earlier_trial(tmp_path):
    path = str(tmp_path / "s.db")
    study = create_or_load_study(_hpo(), resolve_storage(path, tmp_path, "s", _hpo()), SPACE, data_fingerprint="f")
    values = iter([0.2, 0.7, 0.1, 0.7])
    study.optimize(lambda trial: next(values), n_trials=4)
    best = select_best(path, "s")
    assert (best.number, best.value, best.metric, best.direction) == (1, 0.7, "f1_micro", "maximize")
    assert best.data_fingerprint == "f" and best.to_dict()["number"] == 1


def test_select_best_without_a_complete_trial_lists_the_states(tmp_path):
    path = str(tmp_path / "s.db")
    study = create_or_load_study(_hpo(), resolve_storage(path, tmp_path, "s", _hpo()), SPACE)

    def fail(trial):
        raise RuntimeError("boom")

    study.optimize(fail, n_trials=2, catch=(RuntimeError,))
    with pytest.raises(ConfigError, match=r"has no COMPLETE trial \(2 FAIL\)"):
        select_best(path, "s")
    with pytest.raises(ConfigError, match="no hpo study 'other' in this storage; it has: s"):
        load_existing_study(path, "other")


@pytest.mark.parametrize(("worker", "offset"), [(0, 0), (1, 1_000_003), (3, 3_000_009)])
def test_worker_zero_samples_as_a_sweep_and_other_workers_are_offset(monkeypatch, tmp_path, worker, offset):
    from resume_ner.hpo import sweep

    seen = []

    def opened(*args, **kwargs):
        seen.append(args[-1])
        raise RuntimeError("stop after the session's seed offset")

    monkeypatch.setattr(sweep, "_open_session", opened)
    with pytest.raises(RuntimeError, match="seed offset"):
        sweep.run_hpo_worker(ResumeNerConfig(), study_name="s", storage="sqlite:///x.db", n_trials=1,
                             data_path=None, output_dir=tmp_path, worker=worker)
    assert seen == [offset]  # worker 0 uses the seed of `hpo run` (offset 0), so a one-worker pipeline repeats it


def test_asking_for_a_trial_is_serialised_per_sqlite_database(tmp_path):
    """Optuna takes a re-queued trial by a read then an update, which SQLite does not make atomic: the sweep holds a
    flock beside the database from the stale check and the ask until the trial's objective starts."""
    import fcntl

    from resume_ner.hpo.sweep import _ask_lock

    lock = _ask_lock(tmp_path / "study.db")
    assert lock.path == tmp_path / "study.db.turns.lock"
    assert _ask_lock(tmp_path / "study.log").path is None  # a journal's replay lets one taker win
    assert _ask_lock(None).path is None  # a database server locks the row itself
    lock.acquire()
    lock.acquire()  # held already: a no-op, not a self-deadlock
    with open(lock.path, "ab") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's worker would wait here
    lock.release()
    lock.release()  # released already: a no-op
    with open(lock.path, "ab") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _ask_lock(None).acquire()  # nothing to hold


@pytest.mark.parametrize(("storage", "expected"), [
    (None, "out/hpo/s.db"),
    ("studies/s.sqlite3", "studies/s.sqlite3"),
    ("studies/s.journal", "studies/s.journal"),
    ("sqlite:///studies/s.db?timeout=5", "studies/s.db"),
    ("sqlite:///:memory:", None),
    ("postgresql+psycopg2://u:p@db/optuna", None),
    ("studies/s.txt", None),
])
def test_the_study_file_of_each_storage(tmp_path, monkeypatch, storage, expected):
    from resume_ner.hpo.study import storage_file

    monkeypatch.chdir(tmp_path)  # relative paths are the working directory's, as SQLAlchemy reads them
    assert storage_file(storage, Path("out"), "s") == (None if expected is None else tmp_path / expected)
