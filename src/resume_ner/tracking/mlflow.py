"""MLflow tracking: the one place that resolves the tracking URI, the experiment and the run name.

``setup_mlflow`` returns a ``TrackingRun``, a context manager over one MLflow run that logs through an
``MlflowClient`` bound to that run's id (no global active-run state is read or changed, so runs of several
threads or nested runs do not step on each other).

Tracking must never stop training, and a tracking outage should lose nothing: every logging call retries
transient failures a few times with a short backoff (``RetryPolicy``); one that still fails is queued, with
every call after it (in order, so metrics keep their steps and timestamps), and the queue is retried with a
growing interval at later logging calls, without blocking training meanwhile. When the run ends (or on
``flush``) the queue is retried for up to ``RetryPolicy.drain_s``; what still could not be sent is described
in ``TrackingRun.lost`` (``summarize_lost`` names its kinds), with a warning. Permanent errors (bad value,
missing file, ...) go to ``lost`` at once. A server that is unreachable when the run is set up gives a
disabled run whose ``lost`` says why (or a ``TrackingError`` with ``required=True``).

``mlflow`` is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import numbers
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from resume_ner import __version__
from resume_ner.config import TrackingConfig
from resume_ner.errors import TrackingError
from resume_ner.layout import TRACKING_URI_ENV
from resume_ner.redaction import redact_credentials, redact_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "RetryPolicy",
    "TrackingRun",
    "call_with_retry",
    "ensure_experiment",
    "prepare_metrics",
    "prepare_params",
    "given_tracking_uri",
    "prepare_tags",
    "resolve_tracking_uri",
    "setup_mlflow",
    "standard_tags",
    "summarize_lost",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENV_RUN_ID = "MLFLOW_RUN_ID"  # the run a job launcher opened for this process (AzureML jobs set it)
LOCAL_DIR = "mlruns"
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "artifacts"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
PARENT_RUN_TAG = "mlflow.parentRunId"

# MLflow's limits (mlflow.utils.validation), repeated so this module imports without mlflow.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# MLflow error codes that retrying cannot fix (bad key or value, missing run, no permission, ...).
_PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "ENDPOINT_NOT_FOUND",
        "FEATURE_DISABLED",
    }
)
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one logging call tries before it gives up and records the loss.

    ``attempts`` tries, waiting ``backoff_s``, then twice that, ... between them, and never starting a wait
    that would end after ``max_total_s`` from the first try. Meanwhile MLflow's own HTTP retries are off
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``: its default backs off for minutes) and small REST calls time out
    after ``request_timeout_s`` (``MLFLOW_HTTP_REQUEST_TIMEOUT``); artifact uploads keep MLflow's timeout.
    Either variable set in the environment by the user wins. The defaults give up within about 10 s.

    A call that still fails is queued (at most ``queue_limit`` calls; beyond, new calls are lost). The queue
    is tried again, once, at the first logging call ``queue_retry_s`` after the failure, then after twice
    that, ... up to ``queue_retry_max_s``; ``flush`` and the end of the run keep retrying it for up to
    ``drain_s`` before recording what is left as lost.
    """

    attempts: int = 3
    backoff_s: float = 0.5
    max_total_s: float = 10.0
    request_timeout_s: int = 3
    queue_retry_s: float = 1.0
    queue_retry_max_s: float = 30.0
    drain_s: float = 60.0
    queue_limit: int = 10_000

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        if self.backoff_s < 0 or self.max_total_s < 0 or self.request_timeout_s < 1:
            raise ValueError("RetryPolicy: backoff_s and max_total_s must be >= 0, request_timeout_s >= 1")
        if self.queue_retry_s <= 0 or self.queue_retry_max_s < self.queue_retry_s or self.drain_s < 0:
            raise ValueError("RetryPolicy: queue_retry_s must be > 0 and <= queue_retry_max_s, drain_s >= 0")
        if self.queue_limit < 1:
            raise ValueError(f"RetryPolicy.queue_limit must be at least 1, got {self.queue_limit}")


class _HttpEnv:
    """Process-wide, reference-counted overrides of MLflow's HTTP retry and timeout variables.

    Overrides apply only to variables the user has not set. The short timeout is lifted while any artifact
    transfer is in flight, so a metric call in one thread never shortens an upload in another.
    """

    RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._light = 0
        self._heavy = 0
        self._timeout = "3"
        self._user: dict[str, str | None] = {}

    def _apply(self) -> None:
        if self._light + self._heavy == 0:
            for var, value in self._user.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
            self._user = {}
            return
        if self._user.get(self.RETRIES) is None:
            os.environ[self.RETRIES] = "0"
        if self._user.get(self.TIMEOUT) is None:
            if self._heavy == 0:
                os.environ[self.TIMEOUT] = self._timeout
            else:
                os.environ.pop(self.TIMEOUT, None)

    @contextmanager
    def scope(self, policy: RetryPolicy, *, transfer: bool) -> Iterator[None]:
        with self._lock:
            if self._light + self._heavy == 0:
                self._user = {var: os.environ.get(var) for var in (self.RETRIES, self.TIMEOUT)}
            if transfer:
                self._heavy += 1
            else:
                self._light += 1
                self._timeout = str(policy.request_timeout_s)
            self._apply()
        try:
            yield
        finally:
            with self._lock:
                if transfer:
                    self._heavy -= 1
                else:
                    self._light -= 1
                self._apply()


_HTTP_ENV = _HttpEnv()
_OPEN_RUNS = threading.local()  # .stack: TrackingRuns started and not yet ended by this thread


def _open_stack() -> list[TrackingRun]:
    if not hasattr(_OPEN_RUNS, "stack"):
        _OPEN_RUNS.stack = []
    return _OPEN_RUNS.stack


# --- URI, experiment and run name ------------------------------------------------------------------------


def _local_default_uri() -> str:
    root = Path.cwd().resolve() / LOCAL_DIR
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / LOCAL_DB).as_posix()}"


def given_tracking_uri(explicit: str | None, config: TrackingConfig) -> str | None:
    """The tracking URI given for a run, by the project's one rule: ``explicit`` (``--tracking-uri``) >
    ``config.tracking_uri`` > ``$MLFLOW_TRACKING_URI``; None when none is.

    ``config.load`` sets ``tracking.tracking_uri`` from ``--set`` (the pipeline's ``mlflow_uri`` parameter is one),
    else from ``$MLFLOW_TRACKING_URI``, else from the config files, so the environment is read here only for a
    config made in code.
    """
    for candidate in (explicit, config.tracking_uri, os.environ.get(TRACKING_URI_ENV)):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def resolve_tracking_uri(explicit: str | None, config: TrackingConfig) -> str:
    """``given_tracking_uri``, else the local default: ``sqlite:///<cwd>/mlruns/mlflow.db`` (absolute; ``mlruns/``
    is created), whose experiments keep their artifacts in ``<cwd>/mlruns/artifacts``."""
    return given_tracking_uri(explicit, config) or _local_default_uri()


def _sqlite_artifact_location(uri: str) -> str | None:
    """For a sqlite file store, ``file://`` URI of ``artifacts/`` beside the database (created); else None."""
    if not uri.startswith("sqlite:///"):
        return None
    db_path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not db_path or db_path == ":memory:":
        return None
    artifacts = Path(db_path).resolve().parent / LOCAL_ARTIFACTS
    artifacts.mkdir(parents=True, exist_ok=True)
    return artifacts.as_uri()


def _run_name(explicit: str | None, config: TrackingConfig, output_dir: Path | None) -> str:
    if explicit:
        return explicit
    if config.run_name:
        return config.run_name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir).resolve().name if output_dir is not None else ""
    return f"{base or 'resume-ner'}-{stamp}"


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """Id of experiment ``name``, created when missing (artifacts beside a sqlite store), restored if deleted."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_sqlite_artifact_location(uri))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # else another worker created it just now
                raise
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise TrackingError(f"MLflow experiment {name!r} at {redact_credentials(uri)} exists but cannot be read")
    if experiment.lifecycle_stage == "deleted":
        logger.warning("MLflow experiment %r at %s was deleted; restoring it", name, redact_credentials(uri))
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


# --- value preparation ------------------------------------------------------------------------------------


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _key(name: str) -> str:
    """A key MLflow accepts: characters other than alphanumerics, ``_ - . / : space`` become ``_``."""
    return _BAD_KEY_CHARS.sub("_", str(name))[:MAX_KEY_LENGTH]


def _text(value: Any, limit: int) -> str:
    """``value`` as a parameter or tag value: a string, credentials in URLs redacted, cut to ``limit``."""
    text = redact_credentials(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    """``value`` as a finite float (numpy scalars and 0-d tensors included), else None."""
    if not isinstance(value, numbers.Real) and hasattr(value, "item"):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            return None
    if not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def prepare_params(params: Mapping[str, Any]) -> dict[str, str]:
    """``params`` as ``TrackingRun.log_params`` sends them: nested dicts as dotted keys, keys MLflow accepts,
    values strings with credentials in URLs redacted, cut to MLflow's 6000 characters."""
    return {_key(key): _text(value, MAX_PARAM_VAL_LENGTH) for key, value in _flatten(params).items()}


def prepare_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """``tags`` as ``TrackingRun.set_tags`` sends them: keys MLflow accepts, values strings with credentials in
    URLs redacted, cut to MLflow's 8000 characters."""
    return {_key(key): _text(value, MAX_TAG_VAL_LENGTH) for key, value in tags.items()}


def prepare_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics`` as ``TrackingRun.log_metrics`` sends them: nested dicts as dotted
    keys (``per_type.NAME.f1``); strings, None, NaN and infinities left out."""
    prepared: dict[str, float] = {}
    for key, value in _flatten(metrics).items():
        number = _number(value)
        if number is None:
            logger.debug("MLflow: metric %r skipped (not a finite number: %r)", key, value)
            continue
        prepared[_key(key)] = number
    return prepared


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _describe(exc: BaseException) -> str:
    first = redact_credentials((str(exc).strip().splitlines() or [""])[0])
    return f"{type(exc).__name__}: {first[:300]}"


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return True
    if isinstance(exc, (TypeError, ValueError)) and type(exc).__module__ == "builtins":
        return True
    return getattr(exc, "error_code", None) in _PERMANENT_ERROR_CODES


# --- the run ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One logging request: ``what`` it logs (the start of its ``lost`` entry) and the call that sends it."""

    what: str
    send: Callable[[], Any]
    transfer: bool = False


class TrackingRun:
    """One MLflow run, or a disabled stand-in whose methods do nothing (``enabled`` is False).

    Use it as a context manager: leaving the block ends the run FINISHED, or FAILED on an exception
    (KILLED on KeyboardInterrupt). Logging never raises because of MLflow: a call that fails after the retries
    of ``retry`` is queued and sent later (see the module docstring); what could not be logged in the end is
    described in ``lost`` (e.g. ``"metrics step 3: MlflowException: ..."``).
    """

    def __init__(
        self,
        *,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        experiment_id: str | None = None,
        run_name: str | None = None,
        client: Any = None,
        retry: RetryPolicy | None = None,
        lost: list[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.retry = retry or RetryPolicy()
        self.lost: list[str] = list(lost or [])
        self.status: str | None = None  # the status it was ended with
        self._client = client
        self._sleep = sleep
        self._clock = clock
        self._params: dict[str, str] = {}
        self._queue: deque[_Call] = deque()  # calls waiting for the server, oldest first
        self._queue_wait = self.retry.queue_retry_s
        self._queue_retry_at = 0.0
        if self.enabled:
            _open_stack().append(self)

    @classmethod
    def disabled(cls, lost: list[str] | None = None) -> TrackingRun:
        """A run that logs nothing (tracking off, or setup failed: then ``lost`` says why)."""
        return cls(lost=lost)

    @classmethod
    def attach(cls, run_id: str, tracking_uri: str) -> TrackingRun:
        """A ``TrackingRun`` logging into the existing run ``run_id`` (another process started it)."""
        from mlflow import MlflowClient

        return cls(run_id=run_id, tracking_uri=tracking_uri, client=MlflowClient(tracking_uri=tracking_uri))

    @property
    def enabled(self) -> bool:
        """True when this object logs to a real MLflow run."""
        return self.run_id is not None and self._client is not None

    @property
    def active(self) -> bool:
        """True while the run is enabled and not yet ended."""
        return self.enabled and self.status is None

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` bound to ``tracking_uri`` (None when disabled), for calls this class lacks."""
        return self._client

    @property
    def queued(self) -> int:
        """How many logging calls wait for the tracking server to be reachable again."""
        return len(self._queue)

    def __repr__(self) -> str:
        if not self.enabled:
            return f"TrackingRun(disabled, lost={len(self.lost)})"
        return (
            f"TrackingRun(run_id={self.run_id!r}, experiment_id={self.experiment_id!r}, "
            f"tracking_uri={redact_credentials(self.tracking_uri or '')!r}, status={self.status or 'RUNNING'})"
        )

    def __enter__(self) -> TrackingRun:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")
        return False

    # -- retries and the queue -----------------------------------------------------------------------------

    def _attempts(
        self, what: str, call: Callable[[], T], *, transfer: bool = False
    ) -> tuple[bool, T | None, BaseException | None, int]:
        """Run ``call`` under the retry policy: (succeeded, its value, the last error, attempts made)."""
        policy = self.retry
        delay = policy.backoff_s
        spent = 0.0  # seconds in calls and waits so far
        last: BaseException | None = None
        attempt = 0
        for attempt in range(1, policy.attempts + 1):
            started = self._clock()
            try:
                with _HTTP_ENV.scope(policy, transfer=transfer):
                    return True, call(), None, attempt
            except Exception as exc:  # noqa: BLE001 - tracking must not stop training
                last = exc
                spent += self._clock() - started
                if _is_permanent(exc) or attempt == policy.attempts or spent + delay > policy.max_total_s:
                    break
                logger.debug("MLflow %s failed (attempt %d): %s; retrying in %.1fs", what, attempt, exc, delay)
                self._sleep(delay)
                spent += delay
                delay *= 2
        return False, None, last, attempt

    def _lose(self, what: str, error: BaseException, attempts: int) -> None:
        self.lost.append(f"{what}: {_describe(error)}")
        logger.warning(
            "MLflow tracking at %s: could not log %s after %d attempt(s): %s (training continues)",
            redact_credentials(self.tracking_uri or ""),
            what,
            attempts,
            _describe(error),
        )

    def _try(self, what: str, call: Callable[[], T], *, transfer: bool = False) -> tuple[bool, T | None]:
        """Run ``call`` under the retry policy; on final failure warn, record ``what`` in ``lost``."""
        ok, value, error, attempts = self._attempts(what, call, transfer=transfer)
        if not ok:
            assert error is not None
            self._lose(what, error, attempts)
        return ok, value

    def _send_once(self, call: _Call) -> BaseException | None:
        """One try of ``call``: None when it went through, else the error."""
        try:
            with _HTTP_ENV.scope(self.retry, transfer=call.transfer):
                call.send()
        except Exception as exc:  # noqa: BLE001 - tracking must not stop training
            return exc
        return None

    def _log(self, call: _Call) -> bool:
        """Send ``call`` (with retries), or queue it behind earlier calls that wait for the server or when it
        still fails; False when it is lost (a permanent error, or the queue is full)."""
        if self._queue:
            self._retry_queue()
        if not self._queue:
            ok, _, error, attempts = self._attempts(call.what, call.send, transfer=call.transfer)
            if ok:
                return True
            assert error is not None
            if _is_permanent(error):
                self._lose(call.what, error, attempts)
                return False
            logger.warning(
                "MLflow tracking at %s is unreachable (%s): logging is queued and retried later (training continues)",
                redact_credentials(self.tracking_uri or ""),
                _describe(error),
            )
            self._queue_wait = self.retry.queue_retry_s
            self._queue_retry_at = self._clock() + self._queue_wait
        elif len(self._queue) >= self.retry.queue_limit:
            self.lost.append(f"{call.what}: not logged, {len(self._queue)} calls already wait for the tracking server")
            logger.debug("MLflow: %s not queued (the queue is full)", call.what)
            return False
        self._queue.append(call)
        return True

    def _retry_queue(self) -> None:
        """When its wait is over, send the queued calls in order, one try each; at a failure, wait twice as long
        (up to ``queue_retry_max_s``) before the next round."""
        if self._clock() < self._queue_retry_at:
            return
        sent = 0
        while self._queue:
            error = self._send_once(self._queue[0])
            if error is not None and not _is_permanent(error):
                self._queue_wait = min(self._queue_wait * 2, self.retry.queue_retry_max_s)
                self._queue_retry_at = self._clock() + self._queue_wait
                logger.debug("MLflow still unreachable (%s); %d call(s) queued", _describe(error), len(self._queue))
                return
            call = self._queue.popleft()
            if error is not None:
                self._lose(call.what, error, 1)
            sent += 1
        logger.info(
            "MLflow tracking at %s is reachable again: %d queued call(s) sent",
            redact_credentials(self.tracking_uri or ""),
            sent,
        )

    def flush(self, drain_s: float | None = None) -> None:
        """Send the queued calls now, retrying for up to ``drain_s`` seconds (default ``retry.drain_s``) while
        the server is unreachable; what is still queued then is recorded in ``lost``."""
        if not self._queue:
            return
        budget = self.retry.drain_s if drain_s is None else drain_s
        uri = redact_credentials(self.tracking_uri or "")
        logger.info("MLflow: sending %d queued call(s) to %s (retrying for up to %.0fs)", len(self._queue), uri, budget)
        spent, wait = 0.0, self.retry.queue_retry_s
        error: BaseException | None = None
        while self._queue:
            started = self._clock()
            error = self._send_once(self._queue[0])
            spent += self._clock() - started
            if error is None or _is_permanent(error):
                call = self._queue.popleft()
                if error is not None:
                    self._lose(call.what, error, 1)
                continue
            pause = min(wait, budget - spent)
            if pause <= 0:
                break
            self._sleep(pause)
            spent += pause
            wait = min(wait * 2, self.retry.queue_retry_max_s)
        if self._queue:
            assert error is not None
            left = [f"{call.what}: {_describe(error)}" for call in self._queue]
            self._queue.clear()
            self.lost.extend(left)
            logger.warning(
                "MLflow tracking at %s still unreachable after %.0fs: %d queued call(s) lost: %s",
                uri,
                budget,
                len(left),
                summarize_lost(left),
            )

    # -- logging -------------------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; nested dicts become dotted keys, values strings cut to MLflow's 6000 characters.

        A parameter already logged by this run with the same value is skipped; one with a different value
        is not sent (MLflow parameters are immutable) and is recorded in ``lost``.
        """
        if not self.active:
            return
        from mlflow.entities import Param

        pending: list[Param] = []
        for key, text in prepare_params(params).items():
            previous = self._params.get(key)
            if previous == text:
                continue
            if previous is not None:
                message = f"param {key}: already logged as {previous[:80]!r}, not changed to {text[:80]!r}"
                self.lost.append(message)
                logger.warning("MLflow: %s (parameters cannot change within a run)", message)
                continue
            pending.append(Param(key, text))
        for batch in _chunks(pending, MAX_PARAMS_TAGS_PER_BATCH):
            label = f"params ({', '.join(p.key for p in batch[:5])}{', ...' if len(batch) > 5 else ''})"
            send = lambda batch=batch: self._client.log_batch(self.run_id, params=batch, synchronous=True)  # noqa: E731
            if self._log(_Call(label, send)):
                self._params.update({p.key: p.value for p in batch})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the finite numbers of ``metrics`` (nested dicts flattened: ``per_type.NAME.f1``) at ``step``.

        Strings, None, NaN and infinities are skipped. The timestamp is taken now, also for a queued call.
        """
        if not self.active:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = [Metric(key, value, timestamp, int(step or 0)) for key, value in prepare_metrics(metrics).items()]
        label = f"metrics step {step}" if step is not None else "metrics"
        for batch in _chunks(entries, MAX_METRICS_PER_BATCH):
            send = lambda batch=batch: self._client.log_batch(self.run_id, metrics=batch, synchronous=True)  # noqa: E731
            self._log(_Call(label, send))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values as strings, cut to MLflow's 8000 characters)."""
        if not self.active:
            return
        from mlflow.entities import RunTag

        entries = [RunTag(key, value) for key, value in prepare_tags(tags).items()]
        for batch in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            send = lambda batch=batch: self._client.log_batch(self.run_id, tags=batch, synchronous=True)  # noqa: E731
            self._log(_Call(f"tags ({', '.join(t.key for t in batch[:5])})", send))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one file under ``artifact_path`` (the run's artifact root when None)."""
        if not self.active:
            return
        self._log(
            _Call(
                f"artifact {path}",
                lambda: self._client.log_artifact(self.run_id, str(path), artifact_path),
                transfer=True,
            )
        )

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Upload the files of ``local_dir`` (recursively) under ``artifact_path``."""
        if not self.active:
            return
        if not Path(local_dir).is_dir():
            self.lost.append(f"artifacts {local_dir}: not a directory")
            logger.warning("MLflow: artifacts %s not logged: not a directory", local_dir)
            return
        self._log(
            _Call(
                f"artifacts {local_dir}",
                lambda: self._client.log_artifacts(self.run_id, str(local_dir), artifact_path),
                transfer=True,
            )
        )

    def log_dict(self, obj: Any, name: str) -> None:
        """Store ``obj`` as the artifact file ``name`` (JSON, or YAML when ``name`` ends in .yaml/.yml), credentials
        in its strings redacted."""
        if not self.active:
            return
        safe = redact_settings(obj)
        self._log(_Call(f"dict {name}", lambda: self._client.log_dict(self.run_id, safe, name), transfer=True))

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED) after sending the queued calls (``flush``;
        KILLED does not wait for an unreachable server); later calls do nothing."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        if not self.active:
            return
        self.status = status
        stack = _open_stack()
        if self in stack:
            stack.remove(self)
        self._log(_Call(f"end {status}", lambda: self._client.set_terminated(self.run_id, status)))
        self.flush(0.0 if status == "KILLED" else None)


def call_with_retry(
    what: str, call: Callable[[], T], *, tracking_uri: str, retry: RetryPolicy | None = None, transfer: bool = False
) -> T:
    """The value of ``call`` (MLflow requests to ``tracking_uri``) under ``retry``'s retries, short HTTP timeouts
    and MLflow's own retries off; ``TrackingError`` saying it could not ``what`` when it still fails."""
    runner = TrackingRun(tracking_uri=tracking_uri, retry=retry)
    ok, value, error, attempts = runner._attempts(what, call, transfer=transfer)
    if not ok:
        assert error is not None
        raise TrackingError(
            f"MLflow at {redact_credentials(tracking_uri)}: cannot {what} ({attempts} attempt(s)): {_describe(error)}"
        ) from error
    return value  # type: ignore[return-value]


_LOST_KINDS = {
    "setup": "the run (never created)",
    "param": "params",
    "params": "params",
    "tags": "tags",
    "metrics": "metrics",
    "artifact": "artifacts",
    "artifacts": "artifacts",
    "dict": "artifacts",
    "end": "run end",
}


def summarize_lost(lost: Sequence[str]) -> str:
    """The kinds of logging ``lost`` entries of a ``TrackingRun`` cover, e.g. ``"params, metrics (step 4,
    no step), artifacts (train_result.json, model), run end (FINISHED)"``."""
    details: dict[str, list[str]] = {}
    for entry in lost:
        word, _, rest = entry.split(":", 1)[0].partition(" ")
        kind = _LOST_KINDS.get(word, "other")
        found = details.setdefault(kind, [])
        if kind == "metrics":
            detail = rest or "no step"
        elif kind == "artifacts":
            detail = Path(rest).name or rest
        elif kind == "run end":
            detail = rest
        else:
            continue
        if detail not in found:
            found.append(detail)
    parts = []
    for kind in [*dict.fromkeys(_LOST_KINDS.values()), "other"]:
        if kind in details:
            shown = details[kind][:6] + (["..."] if len(details[kind]) > 6 else [])
            parts.append(f"{kind} ({', '.join(shown)})" if shown else kind)
    return ", ".join(parts)


# --- setup ------------------------------------------------------------------------------------------------


def _parent_run_id(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for run in reversed(_open_stack()):
        if run.active:
            return run.run_id
    try:
        import mlflow

        active = mlflow.active_run()
    except Exception:  # noqa: BLE001
        return None
    return active.info.run_id if active is not None else None


def _context_tags(tags: dict[str, str]) -> dict[str, str]:
    """MLflow's usual run-context tags (user, source name, ...) under ``tags``, as ``mlflow.start_run`` adds,
    credentials redacted."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {str(k): redact_credentials(str(v)) for k, v in resolve_tags(tags).items()}  # e.g. a git remote URL
    except Exception:  # noqa: BLE001 - context tags are a nicety
        return tags


def setup_mlflow(
    config: TrackingConfig,
    *,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    output_dir: Path | None = None,
    nested: bool = False,
    tags: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    retry: RetryPolicy | None = None,
    required: bool = False,
) -> TrackingRun:
    """Start an MLflow run and return it as a ``TrackingRun`` (a no-op one when ``config.enabled`` is False).

    * URI: ``resolve_tracking_uri(tracking_uri, config)``.
    * Experiment: ``config.experiment_name``, created when missing (on a sqlite store with its artifacts
      in ``artifacts/`` beside the database file).
    * Run name: ``run_name`` > ``config.run_name`` > ``<output_dir name>-<YYYYmmdd-HHMMSS>``.
    * ``nested``: child of ``parent_run_id``, else of the innermost run this thread has open (a
      ``TrackingRun`` or ``mlflow.start_run``); a top-level run with a warning when there is none.
      ``parent_run_id`` alone implies ``nested`` (use it across threads and processes, e.g. HPO workers).
      Otherwise ``config.parent_run_id`` (a pipeline run's MLflow run) is the parent when set.
    * Tags: ``config.tags``, then ``tags``.
    * ``$MLFLOW_RUN_ID`` (set by job launchers such as AzureML): a top-level run logs into that existing run
      instead of creating one, as ``mlflow.start_run`` does.

    * Retries: ``retry``, else the default ``RetryPolicy`` waiting ``config.outage_wait_s`` at the end of the
      run for a tracking server that went away.

    When the store cannot be reached after the retries, returns a disabled run whose ``lost`` says why (and
    whose ``tracking_uri`` is the URI it tried) and logs a warning, or raises ``TrackingError`` when
    ``required`` is True.
    """
    if not config.enabled:
        return TrackingRun.disabled()
    retry = retry or RetryPolicy(drain_s=config.outage_wait_s)
    uri = resolve_tracking_uri(tracking_uri, config)
    name = _run_name(run_name, config, output_dir)
    run_tags = {str(k): _text(v, MAX_TAG_VAL_LENGTH) for k, v in {**config.tags, **(tags or {})}.items()}
    if nested or parent_run_id:
        parent = _parent_run_id(parent_run_id)
        if parent is None:
            logger.warning("MLflow: nested run %r has no open parent run; starting it as a top-level run", name)
        else:
            run_tags[PARENT_RUN_TAG] = parent
    elif config.parent_run_id:
        run_tags[PARENT_RUN_TAG] = config.parent_run_id

    probe = TrackingRun(tracking_uri=uri, retry=retry)  # not enabled: only used for its retries
    job_run_id = None if nested or parent_run_id else os.environ.get(ENV_RUN_ID)

    def _start() -> tuple[Any, str, Any]:
        from mlflow import MlflowClient
        from mlflow.entities import RunTag

        client = MlflowClient(tracking_uri=uri)
        if job_run_id:  # log into the job's own run, as mlflow.start_run does: an AzureML sweep reads it
            tags = [RunTag(k, v) for k, v in _context_tags(run_tags).items() if k != "mlflow.runName"]
            client.log_batch(job_run_id, tags=tags, synchronous=True)
            adopted = client.get_run(job_run_id)
            return client, adopted.info.experiment_id, adopted
        experiment_id = ensure_experiment(client, config.experiment_name, uri)
        created = client.create_run(experiment_id, run_name=name, tags=_context_tags(run_tags))
        return client, experiment_id, created

    ok, started = probe._try(f"setup (experiment {config.experiment_name!r})", _start)
    if not ok or started is None:
        if required:
            raise TrackingError(
                f"cannot start an MLflow run at {redact_credentials(uri)}: {probe.lost[-1]}. Start the tracking "
                f"server or fix tracking.tracking_uri / ${TRACKING_URI_ENV}, or set tracking.enabled=false."
            )
        return TrackingRun(tracking_uri=uri, lost=probe.lost)  # disabled: no run
    client, experiment_id, created = started
    logger.info(
        "MLflow run %r (%s) in experiment %r at %s",
        name,
        created.info.run_id,
        config.experiment_name,
        redact_credentials(uri),
    )
    return TrackingRun(
        run_id=created.info.run_id,
        tracking_uri=uri,
        experiment_id=experiment_id,
        run_name=created.info.run_name or name,
        client=client,
        retry=retry,
    )


# --- standard tags ----------------------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=os.getcwd(), capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def _package_version(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def standard_tags(*, data_fingerprint: str | None, config_hash: str | None) -> dict[str, str]:
    """Tags every training run carries: data fingerprint, config hash, versions, git commit when known.

    ``mlflow.source.git.commit`` is set when ``git rev-parse HEAD`` succeeds in the current directory;
    torch and transformers versions when installed (read from package metadata: nothing is imported).
    """
    tags = {"resume_ner.version": __version__}
    if data_fingerprint:
        tags["resume_ner.data_fingerprint"] = data_fingerprint
    if config_hash:
        tags["resume_ner.config_hash"] = config_hash
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    for package in ("torch", "transformers"):
        version = _package_version(package)
        if version:
            tags[f"resume_ner.{package}_version"] = version
    return tags
