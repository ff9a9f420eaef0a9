"""Turns that a study's processes take where Optuna's storage does not serialise them.

* ``FileLock``: an exclusive ``flock`` on ``<study file>.turns.lock`` beside a SQLite or journal study file (one
  machine's file, so a lock beside it serialises every process that uses it; containers on one host share it
  through the bind mount).
* ``parent_run_turn``: held while a process finds or opens the study's MLflow parent run. Reading the study's
  ``mlflow_parent_run_id`` and recording a new one are two storage calls; two processes starting at the same
  moment both read nothing, and each recorded its own parent, so half of the trials hung under a run that the
  study no longer named (a pipeline's two HPO workers in containers: the lineage listed 2 of its 4 trials). The
  turn is the file lock of a SQLite or journal file, or a PostgreSQL advisory lock on a PostgreSQL database
  (a row lock would block Optuna's own writes to the study from the same process).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".turns.lock"  # not Optuna's journal lock (<file>.lock), which it creates and deletes itself


class FileLock:
    """An exclusive ``flock`` on ``path``, held from ``acquire`` to ``release`` (a no-op when ``path`` is None).

    ``acquire`` while held is a no-op, so a holder may release it from inside a callback (the sweep's objective).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    def acquire(self) -> None:
        if self.path is not None and self._handle is None:
            self._handle = open(self.path, "ab")  # held across calls: closed by release
            fcntl.flock(self._handle, fcntl.LOCK_EX)

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def turns_lock_path(study_file: Path) -> Path:
    """The turns lock beside a SQLite or journal study file."""
    return Path(str(study_file) + LOCK_SUFFIX)


@contextmanager
def parent_run_turn(storage: object, study_file: Path | None, study_name: str) -> Iterator[None]:
    """Hold the study's turn to find or open its MLflow parent run (see the module doc).

    ``study_file`` is the SQLite or journal file of ``storage`` (``hpo.study.storage_file``), None for a database
    server or memory. A database server other than PostgreSQL has no turn: a warning says that workers started
    at the same moment may each open a parent run.
    """
    if study_file is not None:
        lock = FileLock(turns_lock_path(study_file))
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
    engine = getattr(storage, "engine", None)  # an RDBStorage's; Optuna's in-memory storage has none
    dialect = engine.dialect.name if engine is not None else None
    if engine is not None and dialect == "postgresql":
        import sqlalchemy

        with engine.connect() as connection, connection.begin():  # the lock ends with the transaction
            connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(study_name)})
            yield
        return
    if dialect not in (None, "sqlite"):  # an in-memory database is one process's
        log.warning(
            "hpo study %r: a %s database has no lock for opening the study's MLflow parent run here; workers "
            "started at the same moment may each open one (start one worker first, or use PostgreSQL)",
            study_name,
            dialect,
        )
    yield


def _lock_key(study_name: str) -> int:
    """A signed 64-bit advisory lock key for the study's parent run."""
    digest = hashlib.sha256(f"resume-ner mlflow parent run of study {study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
