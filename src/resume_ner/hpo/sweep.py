"""Sweeps: ``run_local_hpo_sweep`` (one process, ends with a report) and ``run_hpo_worker`` (one of many
processes sharing a study's storage).

``n_trials`` is the study's total of finished (COMPLETE + PRUNED) trials, resumed studies included: running
the same sweep again with ``n_trials=6`` after a 4-trial run adds exactly 2. Before each trial a process
counts the finished and RUNNING trials: it starts one only while their sum is below ``n_trials``; when only
other workers' running trials are missing it waits for them (polling; with heartbeats a dead worker's trial
goes stale, is marked FAIL, its MLflow run ended FAILED, and re-queued, and this process then runs it), and
stops when the study has ``n_trials`` finished trials. Two processes that start a trial at the same moment
are told apart by the trial number: the later one is not needed and ends FAIL with ``error`` "not run: ..."
without training. (Optuna's ``MaxTrialsCallback`` counts only finished trials, so parallel workers would
overshoot.)

A trial that raises is FAIL with its error in the ``error`` user attribute, and the sweep goes on; a
process stops after ``n_trials`` failures of its own, and the sweep raises only when every trial of the
study failed. The dataset is loaded once per process; its fingerprint is recorded in the study and a
study of another dataset is refused. Output layout::

    <output_dir>/hpo/<study>.db        default storage
    <output_dir>/trials/trial-NNNN/    each trial's training output (model/ kept)
    <output_dir>/hpo/<study>/          report of run_local_hpo_sweep: trials.csv, *.png
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.config import ResumeNerConfig, config_from_dict
from resume_ner.data.dataset import load_training_data
from resume_ner.errors import ConfigError, ResumeNerError
from resume_ner.hpo.locks import FileLock, parent_run_turn, turns_lock_path
from resume_ner.hpo.parent_run import log_study_report, open_parent_run
from resume_ner.hpo.report import write_study_report
from resume_ner.hpo.search_space import apply_params, parse_search_space
from resume_ner.hpo.select import best_frozen_trial, best_trial_of
from resume_ner.hpo.study import JOURNAL_SUFFIXES, create_or_load_study, resolve_storage, storage_file
from resume_ner.hpo.trial import end_stale_run, run_trial

if TYPE_CHECKING:
    import optuna

    from resume_ner.tracking.mlflow import TrackingRun

log = logging.getLogger(__name__)

MAX_WAIT_POLL_S = 5.0
WORKER_SEED_STRIDE = 1_000_003  # sampler seed offset between worker indices
FIRST_ERRORS_SHOWN = 3


class _NotNeeded(Exception):
    """A trial started while the study already had enough finished and running trials."""


@dataclass
class WorkerSummary:
    """What one worker did, and where its study stands."""

    study_name: str
    n_trials: int  # the study's target of finished trials
    trials_run: list[int] = field(default_factory=list)  # numbers of the trials this worker trained
    states: dict[str, int] = field(default_factory=dict)  # the study's trials per state at the end
    best_number: int | None = None
    best_value: float | None = None
    parent_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return asdict(self)


@dataclass
class _Session:
    """A sweep's resolved inputs: config, space, data, study and its storage."""

    config: ResumeNerConfig
    space: Any
    dataset: Any
    study: optuna.Study
    heartbeat: bool
    output_dir: Path
    storage: Any  # the Optuna storage of the study
    study_file: Path | None  # its sqlite or journal file
    ask_lock: FileLock  # see _ask_lock

    def open_parent_run(self) -> TrackingRun:
        """The study's MLflow parent run, found or opened in the study's turn (``hpo.locks``)."""
        with parent_run_turn(self.storage, self.study_file, self.study.study_name):
            return open_parent_run(self.config, self.study)


def _open_session(
    config: ResumeNerConfig | dict[str, Any],
    study_name: str | None,
    n_trials: int | None,
    storage: str | None,
    timeout: float | None,
    data_path: str | Path | None,
    output_dir: str | Path,
    seed_offset: int = 0,
) -> _Session:
    """Validate the config and search space, load the dataset, create or load the study."""
    import optuna

    raw = config_from_dict(config).to_dict()
    given = {"study_name": study_name, "n_trials": n_trials, "storage": storage, "timeout": timeout}
    raw["hpo"].update({key: value for key, value in given.items() if value is not None})
    config = config_from_dict(raw, origin="hpo sweep arguments")
    hpo = config.hpo
    space = parse_search_space(hpo.search_space, config)
    path, dataset = load_training_data(config, data_path)
    if not dataset.validation:
        raise ConfigError(
            f"{path}: the validation split is empty, and trials are scored on it; set "
            "data.validation_fraction above 0 or add a validation.* file"
        )
    backend = resolve_storage(
        hpo.storage, Path(output_dir), hpo.study_name, hpo, on_stale=partial(end_stale_run, config.tracking)
    )
    study = create_or_load_study(hpo, backend, space, data_fingerprint=dataset.fingerprint, seed_offset=seed_offset)
    heartbeat = isinstance(backend, optuna.storages.RDBStorage)
    study_file = storage_file(hpo.storage, Path(output_dir), hpo.study_name)
    ask_lock = _ask_lock(study_file)
    return _Session(config, space, dataset, study, heartbeat, Path(output_dir), backend, study_file, ask_lock)


def _ask_lock(study_file: Path | None) -> FileLock:
    """The lock a process holds from before it fails stale trials and asks for a trial until the trial's objective
    starts (``release``), on a sqlite study file; a no-op lock on any other storage.

    Optuna takes a re-queued (WAITING) trial by reading its state and then updating it (``_pop_waiting_trial_id``);
    on SQLite the read is outside the update's transaction (``SELECT ... FOR UPDATE`` locks nothing there), so two
    workers asking at the same moment could both take it and train the same trial (seen in
    tests/reliability/test_killed_hpo_workers.py), and two failing the same stale trial could re-queue it twice.
    A database server locks the row, and a journal storage's replay lets one taker win: they need none.
    """
    if study_file is None or study_file.suffix.lower() in JOURNAL_SUFFIXES:
        return FileLock(None)
    return FileLock(turns_lock_path(study_file))


def _claim(trial: optuna.Trial, n_trials: int) -> None:
    """Raise ``_NotNeeded`` when finished trials plus earlier-numbered running ones already reach ``n_trials``."""
    import optuna

    states = optuna.trial.TrialState
    ahead = [
        t
        for t in trial.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING))
        if t.state != states.RUNNING or t.number < trial.number
    ]
    if len(ahead) >= n_trials:
        message = (
            f"not run: the study already had {len(ahead)} finished or running trial(s) of n_trials={n_trials} "
            "(another worker started one at the same moment)"
        )
        trial.set_user_attr("error", message)
        raise _NotNeeded(message)


def _counts(study: optuna.Study) -> Counter:
    return Counter(trial.state.name for trial in study.get_trials(deepcopy=False))


def _state(study: optuna.Study, number: int) -> str:
    return next(trial.state.name for trial in study.get_trials(deepcopy=False) if trial.number == number)


def _fail_stale_trials(study: optuna.Study) -> None:
    """Mark trials of dead workers FAIL (the storage's callback re-queues them and ends their MLflow runs)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _run_trials(session: _Session, parent_run_id: str | None) -> list[int]:
    """Run trials until the study has ``hpo.n_trials`` finished ones (or timeout / failure budget); their numbers."""
    hpo, study = session.config.hpo, session.study
    deadline = time.monotonic() + hpo.timeout if hpo.timeout else None
    ran: list[int] = []
    failures = 0

    def objective(trial: optuna.Trial) -> float:
        session.ask_lock.release()  # this trial is taken: other processes may ask now
        _claim(trial, hpo.n_trials)
        ran.append(trial.number)
        return run_trial(
            trial,
            config=session.config,
            space=session.space,
            train_docs=session.dataset.train,
            val_docs=session.dataset.validation,
            output_dir=session.output_dir,
            parent_run_id=parent_run_id,
            data_fingerprint=session.dataset.fingerprint,
        )

    while True:
        if session.heartbeat:
            session.ask_lock.acquire()
            try:
                _fail_stale_trials(study)
            finally:
                session.ask_lock.release()
        counts = _counts(study)
        finished, running = counts["COMPLETE"] + counts["PRUNED"], counts["RUNNING"]
        if finished >= hpo.n_trials:
            log.info(
                "hpo study %r has %d finished trial(s) (n_trials=%d): done", study.study_name, finished, hpo.n_trials
            )
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.warning(
                "hpo study %r: timeout of %.0fs reached with %d of %d finished trial(s)",
                study.study_name,
                hpo.timeout,
                finished,
                hpo.n_trials,
            )
            break
        if failures >= hpo.n_trials:
            log.warning(
                "hpo study %r: %d trial(s) failed in this process; stopping with %d of %d finished",
                study.study_name,
                failures,
                finished,
                hpo.n_trials,
            )
            break
        if finished + running >= hpo.n_trials:
            if not session.heartbeat:
                log.info(
                    "hpo study %r: the remaining trial(s) are running in other workers; stopping", study.study_name
                )
                break
            log.debug("waiting for %d running trial(s) of other workers", running)
            time.sleep(min(float(hpo.heartbeat_interval), MAX_WAIT_POLL_S))
            continue
        before = len(ran)
        session.ask_lock.acquire()  # held through Optuna's stale check and ask, released by the objective
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        finally:
            session.ask_lock.release()
        if len(ran) > before and _state(study, ran[-1]) == "FAIL":
            failures += 1
    return ran


def _raise_if_all_failed(study: optuna.Study) -> None:
    """``ResumeNerError`` with the first errors when the study has trials and every one of them failed."""
    trials = study.get_trials(deepcopy=False)
    if not trials or any(trial.state.name != "FAIL" for trial in trials):
        return
    errors = [f"trial {t.number}: {t.user_attrs.get('error', t.state.name)}" for t in trials[:FIRST_ERRORS_SHOWN]]
    raise ResumeNerError(
        f"hpo study {study.study_name!r}: all {len(trials)} trial(s) failed; the first:\n  "
        + "\n  ".join(errors)
        + "\nFix the cause and run the sweep again (the study is kept)"
    )


def _summary(session: _Session, ran: list[int], parent_run_id: str | None) -> WorkerSummary:
    best = best_frozen_trial(session.study)
    return WorkerSummary(
        study_name=session.study.study_name,
        n_trials=session.config.hpo.n_trials,
        trials_run=ran,
        states=dict(_counts(session.study)),
        best_number=best.number if best is not None else None,
        best_value=best.value if best is not None else None,
        parent_run_id=parent_run_id,
    )


def run_hpo_worker(
    config: ResumeNerConfig | dict[str, Any],
    *,
    study_name: str,
    storage: str,
    n_trials: int,
    data_path: str | Path | None,
    output_dir: str | Path,
    timeout: float | None = None,
    worker: int | None = None,
) -> WorkerSummary:
    """Run trials of a study shared with other workers until it has ``n_trials`` finished trials.

    ``worker`` (0, 1, ...) offsets this worker's sampler seed, so workers started together propose different
    settings, reproducibly (worker 0 samples exactly as ``run_local_hpo_sweep``); without it the offset comes
    from the process id.
    """
    offset = WORKER_SEED_STRIDE * worker if worker is not None else os.getpid()
    session = _open_session(config, study_name, n_trials, storage, timeout, data_path, output_dir, offset)
    with session.open_parent_run() as parent:  # ends FINISHED, FAILED or KILLED
        ran = _run_trials(session, parent.run_id)
        _raise_if_all_failed(session.study)
    return _summary(session, ran, parent.run_id)


def run_local_hpo_sweep(
    config: ResumeNerConfig | dict[str, Any],
    study_name: str | None = None,
    n_trials: int | None = None,
    *,
    data_path: str | Path | None,
    output_dir: str | Path,
    storage: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run (or continue) a study in this process, report it, and return the best config as a nested dict.

    ``study_name``, ``n_trials``, ``storage`` and ``timeout`` default to the ``hpo`` section, ``data_path`` to
    ``data.path``. The report
    (``trials.csv`` and plots) goes to ``<output_dir>/hpo/<study>/`` and onto the MLflow parent run.
    """
    session = _open_session(config, study_name, n_trials, storage, timeout, data_path, output_dir)
    study = session.study
    with session.open_parent_run() as parent:  # ends FINISHED, FAILED or KILLED
        _run_trials(session, parent.run_id)
        files = write_study_report(study, session.output_dir / "hpo" / study.study_name)
        log_study_report(parent, study, files)
        _raise_if_all_failed(study)
        best = best_trial_of(study)
    log.info("hpo study %r: best trial %d, %s %.4f", study.study_name, best.number, best.metric, best.value)
    return apply_params(session.config, best.params).to_dict()
