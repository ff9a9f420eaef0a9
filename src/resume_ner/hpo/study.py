"""Optuna studies: storages (sqlite file, journal file, SQLAlchemy URL), samplers, pruners, create or load.

Storages:

* ``None`` -> sqlite file ``<output_dir>/hpo/<study_name>.db``;
* ``*.db`` / ``*.sqlite`` / ``*.sqlite3`` -> that sqlite file; anything with ``://`` -> a SQLAlchemy URL
  (``postgresql+psycopg2://...``, ``mysql+pymysql://...``, ``sqlite:///...``). Both are ``RDBStorage`` with trial
  heartbeats (``hpo.heartbeat_interval``): a trial whose worker died (no heartbeat for
  ``hpo.grace_period`` s) is marked FAIL by the next worker that starts a trial, and re-queued
  ``hpo.failed_trial_retries`` times with the same parameters (then ``on_stale`` is called with it, e.g. to
  end its MLflow run);
* ``*.log`` / ``*.journal`` / ``*.jsonl`` -> ``JournalStorage(JournalFileBackend(path))``. Optuna 5 has no
  heartbeat for journal storages, so a trial of a killed worker stays RUNNING there: use sqlite or a
  database URL when workers may be killed.

Samplers (``hpo.sampler``, all seeded by ``hpo.seed`` plus the number of trials already in the study, so
a resumed study does not replay its first random draws): ``tpe`` (multivariate, ``constant_liar`` so
parallel workers spread out, ``hpo.n_startup_trials`` random trials first), ``random``, ``grid`` (every
combination of a choice-only space) and ``cmaes`` (CMA-ES handles float and int parameters only; choices
fall back to random sampling; needs the ``cmaes`` package). Pruners (``hpo.pruner``), fed the validation
``hpo.pruning_metric`` after each epoch (``PruningCallback``): ``median`` (``hpo.n_startup_trials`` trials
are never pruned, nor any trial before ``hpo.n_warmup_epochs`` epochs), ``hyperband``,
``successive_halving``, ``none``.

A study records its metric, direction, pruning metric and dataset fingerprint in its user attributes;
loading it with another metric, direction, pruning metric or dataset is refused with a ``ConfigError``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.config import HpoConfig
from resume_ner.errors import ConfigError
from resume_ner.hpo.search_space import SearchSpace
from resume_ner.redaction import redact_credentials

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage, RDBStorage
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
SQLITE_TIMEOUT_S = 60  # concurrent workers on one sqlite file wait this long for its lock
STORAGE_OPEN_ATTEMPTS = 3
METRIC_ATTR = "metric"
DIRECTION_ATTR = "direction"
PRUNING_METRIC_ATTR = "pruning_metric"
FINGERPRINT_ATTR = "data_fingerprint"
SEARCH_SPACE_ATTR = "search_space"
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # set by the sweep that opened the study's MLflow parent run
# The direction in which each validation metric improves.
METRIC_DIRECTIONS = {"f1_micro": "maximize", "f1_macro": "maximize", "span_f1_micro": "maximize", "loss": "minimize"}
StaleTrialHook = Callable[["optuna.Study", "FrozenTrial"], None]  # (study, frozen trial) of a trial whose worker died


def resolve_storage(
    storage: str | None,
    output_dir: Path,
    study_name: str,
    hpo: HpoConfig,
    *,
    create: bool = True,
    on_stale: StaleTrialHook | None = None,
) -> BaseStorage:
    """The Optuna storage named by ``storage`` (see the module doc); ``create=False`` refuses a missing file.

    ``on_stale`` (RDB storages) is called for each trial of a dead worker that this process marks FAIL.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    text = "" if storage is None else str(storage).strip()
    path = storage_file(storage, output_dir, study_name)
    if "://" in text:
        return _rdb_storage(text, hpo, path, create, on_stale)
    if path is None:
        raise ConfigError(
            f"hpo storage {text!r}: expected a sqlite file ({', '.join('*' + s for s in SQLITE_SUFFIXES)}), a "
            f"journal file ({', '.join('*' + s for s in JOURNAL_SUFFIXES)}) or a SQLAlchemy URL such as "
            "postgresql+psycopg2://user:password@host/db"
        )
    if path.suffix.lower() in JOURNAL_SUFFIXES:
        _check_exists(path, create)
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("Optuna journal storage %s: no trial heartbeats (a killed worker's trial stays RUNNING)", path)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return _rdb_storage(f"sqlite:///{path.as_posix()}", hpo, path, create, on_stale)


def storage_file(storage: str | None, output_dir: Path, study_name: str) -> Path | None:
    """The sqlite or journal file that ``storage`` names (see the module doc); None for a database server, an
    in-memory sqlite database or a name that is neither."""
    text = "" if storage is None else str(storage).strip()
    if not text:
        return (Path(output_dir) / "hpo" / f"{study_name}.db").resolve()
    if "://" in text:
        database = text.split("///", 1)[1].split("?", 1)[0] if text.startswith("sqlite:///") else ""
        return Path(database).resolve() if database not in ("", ":memory:") else None
    path = Path(text).expanduser()
    return path.resolve() if path.suffix.lower() in SQLITE_SUFFIXES + JOURNAL_SUFFIXES else None


def _check_exists(path: Path, create: bool) -> None:
    if not create and not path.is_file():
        raise ConfigError(f"hpo storage {path}: no such file; give the --storage of an existing study")


def _rdb_storage(
    url: str, hpo: HpoConfig, local_file: Path | None, create: bool, on_stale: StaleTrialHook | None
) -> RDBStorage:
    """An ``RDBStorage`` with heartbeats and retries of trials whose worker died (then ``on_stale``)."""
    import optuna
    import sqlalchemy
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    if local_file is not None:
        _check_exists(local_file, create)
        Path(local_file).parent.mkdir(parents=True, exist_ok=True)
    attempt = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=hpo.failed_trial_retries)
        callback = retry if on_stale is None else _chained(retry, on_stale)
        while True:
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=hpo.heartbeat_interval,
                    grace_period=hpo.grace_period,
                    heartbeat_stale_trial_callback=callback,
                )
            except sqlalchemy.exc.DatabaseError as exc:
                # Workers that start together on a new database race to create its tables: the loser retries.
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                if attempt == STORAGE_OPEN_ATTEMPTS:
                    raise ConfigError(f"hpo storage {redact_credentials(url)}: cannot open it: {reason}") from exc
                log.info("hpo storage %s: %s; retrying", redact_credentials(url), reason)
                time.sleep(attempt)
                attempt += 1
            except (ImportError, ValueError) as exc:
                hint = ""
                if url.startswith("postgresql://") and "psycopg" in _missing_modules(exc):
                    hint = (
                        "; SQLAlchemy 2.1 reads postgresql:// with psycopg 3, and the project installs psycopg2:"
                        " write postgresql+psycopg2://"
                    )
                raise ConfigError(f"hpo storage {redact_credentials(url)}: cannot open it: {exc}{hint}") from exc


def _missing_modules(error: BaseException | None) -> set[str]:
    """The names of the modules that ``error`` or its causes could not import."""
    names: set[str] = set()
    while error is not None:
        if isinstance(error, ImportError) and error.name:
            names.add(error.name)
        error = error.__cause__ or error.__context__
    return names


def _chained(first: StaleTrialHook, then: StaleTrialHook) -> StaleTrialHook:
    """A stale-trial callback that calls ``first``, then ``then``."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        first(study, trial)
        then(study, trial)

    return callback


def create_sampler(hpo: HpoConfig, space: SearchSpace, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``hpo.sampler``, seeded with ``seed`` (default ``hpo.seed``)."""
    import optuna

    seed = hpo.seed if seed is None else seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hpo.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True, n_startup_trials=hpo.n_startup_trials
            )
        if hpo.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if hpo.sampler == "grid":
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError("hpo.sampler=cmaes needs the 'cmaes' package (pip install cmaes), or use hpo.sampler=tpe")
        return optuna.samplers.CmaEsSampler(seed=seed)


def create_pruner(hpo: HpoConfig) -> optuna.pruners.BasePruner:
    """The Optuna pruner of ``hpo.pruner``."""
    import optuna

    if hpo.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=hpo.n_startup_trials, n_warmup_steps=hpo.n_warmup_epochs)
    if hpo.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if hpo.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def create_or_load_study(
    hpo: HpoConfig,
    storage: BaseStorage,
    space: SearchSpace,
    *,
    data_fingerprint: str | None = None,
    seed_offset: int = 0,
) -> optuna.Study:
    """Create study ``hpo.study_name`` in ``storage``, or load it; refuse one of another metric or dataset.

    The sampler is seeded with ``hpo.seed`` + the study's trial count + ``seed_offset`` (workers that start
    together pass different offsets, or their samplers would propose the same settings).

    New studies record ``metric``, ``direction``, ``pruning_metric``, ``search_space`` and ``data_fingerprint``
    (when given) in their user attributes. Raises ``ConfigError`` when ``hpo.direction`` does not fit ``hpo.metric``.
    """
    import optuna

    expected = METRIC_DIRECTIONS[hpo.metric]
    if hpo.direction != expected:
        raise ConfigError(
            f"hpo.direction={hpo.direction} but hpo.metric={hpo.metric} improves when it goes "
            f"{'up' if expected == 'maximize' else 'down'}: set hpo.direction={expected}"
        )
    existing = _trial_count(storage, hpo.study_name)
    sampler = create_sampler(hpo, space, seed=hpo.seed + existing + seed_offset)
    study = optuna.create_study(
        study_name=hpo.study_name,
        storage=storage,
        sampler=sampler,
        pruner=create_pruner(hpo),
        direction=hpo.direction,
        load_if_exists=True,
    )
    wanted = {
        METRIC_ATTR: hpo.metric,
        DIRECTION_ATTR: hpo.direction,
        PRUNING_METRIC_ATTR: hpo.pruning_metric,
        FINGERPRINT_ATTR: data_fingerprint,
        SEARCH_SPACE_ATTR: hpo.search_space,
    }
    attrs = study.user_attrs
    for key, value in wanted.items():  # a new study (or one from before a key existed) records them
        if value is not None and key not in attrs:
            study.set_user_attr(key, value)
    attrs = study.user_attrs  # re-read: a worker that created the study at the same moment may have won
    changed = [
        f"{key} {attrs[key]!r} (now {wanted[key]!r})"
        for key in (METRIC_ATTR, DIRECTION_ATTR, PRUNING_METRIC_ATTR)
        if attrs.get(key) != wanted[key]
    ]
    if not changed and study.direction.name.lower() != hpo.direction:
        changed.append(f"direction {study.direction.name.lower()!r} (now {hpo.direction!r})")
    if changed:
        raise ConfigError(
            f"hpo study {hpo.study_name!r} was created with {'; '.join(changed)}: its trials are not "
            "comparable; use another hpo.study_name (--study) or the original "
            "hpo.metric/direction/pruning_metric"
        )
    known = attrs.get(FINGERPRINT_ATTR)
    if data_fingerprint is not None and known != data_fingerprint:
        raise ConfigError(
            f"hpo study {hpo.study_name!r} was run on dataset {known} but this data is "
            f"{data_fingerprint}: use another --study, or the study's dataset"
        )
    log.info(
        "hpo study %r: %d trial(s) so far, sampler %s, pruner %s", hpo.study_name, existing, hpo.sampler, hpo.pruner
    )
    return study


def _trial_count(storage: BaseStorage, study_name: str) -> int:
    """Trials of ``study_name`` in ``storage`` (0 when the study does not exist yet)."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return storage.get_n_trials(study_id)


def load_existing_study(storage: BaseStorage | str | None, study_name: str) -> optuna.Study:
    """Load study ``study_name`` from an Optuna storage or anything ``resolve_storage`` accepts (no creation)."""
    import optuna

    if storage is None:
        raise ConfigError(f"hpo study {study_name!r}: give its storage (--storage), e.g. runs/hpo/hpo/{study_name}.db")
    if not isinstance(storage, optuna.storages.BaseStorage):
        storage = resolve_storage(storage, Path.cwd(), study_name, HpoConfig(), create=False)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        raise ConfigError(f"no hpo study {study_name!r} in this storage; it has: {', '.join(names) or 'no study'}")
    return optuna.load_study(study_name=study_name, storage=storage)
