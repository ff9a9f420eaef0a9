"""Log a finished training output directory to MLflow after the fact: ``resume-ner tracking relog DIR``.

When a tracking outage outlasted a training (``train`` exited 3), the directory still holds what its run
should have had: ``config.yaml``, ``train_result.json`` (history, best metrics, ``derived`` params, run id and
tracking URI), ``test_metrics.json`` and ``model/``. ``relog_output_dir`` logs them as the trainer does:

* into the run whose id ``train_result.json`` records, when it exists at the tracking URI and is RUNNING
  (left open by the outage) or FINISHED, adding only what it lacks: parameters it does not have (one with
  another value is refused: that run is not this training's), metric values at steps where it has none for
  that key, and missing artifacts;
* otherwise into a new run (``experiment`` / ``run_name``, by default those of ``config.yaml``; the run name
  then defaults to the directory's name), whose id and URI then replace those in ``train_result.json`` so a
  later relog finds it;

and the run ends FINISHED, tagged ``resume_ner.relogged_from`` (the directory) when anything was added.
Relogging again adds nothing (idempotent). A recorded run that ended FAILED or KILLED is refused. The directory
does not keep the per-step training metrics (``train_loss`` every ``training.log_every_steps``) nor each
epoch's per-type validation metrics, so those are not relogged.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.errors import ConfigError, TrackingError
from resume_ner.io import write_json_atomic
from resume_ner.layout import CONFIG_FILE, MODEL_DIRNAME, RESULT_FILE, TEST_METRICS_FILE, TRACKING_URI_ENV
from resume_ner.redaction import REDACTED, redact_credentials
from resume_ner.training.checkpoint import validate_checkpoint

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

__all__ = ["RelogResult", "relog_command", "relog_output_dir"]

log = logging.getLogger(__name__)

RELOGGED_TAG = "resume_ner.relogged_from"


@dataclass
class RelogResult:
    """What one relog did: the run, whether it was created, and what was added to it."""

    run_id: str
    tracking_uri: str  # credentials redacted
    created: bool
    params: int = 0
    metrics: int = 0  # metric values (a key at a step)
    tags: int = 0
    artifacts: list[str] = field(default_factory=list)
    ended: bool = False  # the run was ended FINISHED now

    @property
    def changed(self) -> bool:
        """False when the run already held everything and was FINISHED."""
        return self.created or self.ended or bool(self.params or self.metrics or self.tags or self.artifacts)


def relog_command(output_dir: str | Path, tracking_uri: str | None) -> str:
    """The shell command that relogs ``output_dir`` to ``tracking_uri`` (credentials redacted)."""
    command = ["resume-ner", "tracking", "relog", str(output_dir)]
    if tracking_uri:
        command += ["--tracking-uri", redact_credentials(tracking_uri)]
    return shlex.join(command)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read ({exc.strerror or exc}); pass the output directory of a finished "
            "training (`resume-ner train --output-dir DIR`)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None


@dataclass
class _Finished:
    """The contents of a finished training output directory."""

    directory: Path
    config: Any  # ResumeNerConfig
    result: dict[str, Any]
    test_metrics: dict[str, Any] | None


def _read_output_dir(directory: Path) -> _Finished:
    """The finished training in ``directory``; ``ConfigError`` / ``CheckpointError`` when it is incomplete."""
    import yaml

    from resume_ner.config import config_from_dict

    result = _read_json(directory / RESULT_FILE)
    if (
        not isinstance(result, dict)
        or not isinstance(result.get("history"), list)
        or not all(result.get(key) for key in ("data_fingerprint", "config_hash"))
    ):
        raise ConfigError(
            f"{directory / RESULT_FILE}: not the TrainResult of a finished training (it needs "
            "history, data_fingerprint and config_hash)"
        )
    try:
        raw = yaml.safe_load((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{directory / CONFIG_FILE}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{directory / CONFIG_FILE}: invalid YAML ({exc})") from None
    config = config_from_dict(raw or {}, origin=str(directory / CONFIG_FILE))
    validate_checkpoint(directory / MODEL_DIRNAME)
    test_path = directory / TEST_METRICS_FILE
    return _Finished(directory, config, result, _read_json(test_path) if test_path.exists() else None)


def _params(done: _Finished) -> dict[str, str]:
    """The params the trainer logged for this training (credentials redacted)."""
    from resume_ner.tracking.mlflow import prepare_params

    settings = done.config.to_dict()
    params = prepare_params({**settings, "data": {**settings["data"], "fingerprint": done.result["data_fingerprint"]}})
    params.update(prepare_params({"derived": done.result.get("derived") or {}}))
    return params


def _numbers(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if isinstance(value, (int, float))}


def _metrics(done: _Finished) -> dict[tuple[str, int], float]:
    """The metric values the trainer and the test evaluation logged, by (key, step): per epoch at its last step
    (``epoch``, ``train_loss_epoch``, ``val_*``), and at step 0 ``best_val_*`` and ``test_*``."""
    from resume_ner.tracking.mlflow import prepare_metrics

    values: dict[tuple[str, int], float] = {}
    for entry in done.result["history"]:
        scores = {key: value for key, value in entry.items() if key not in ("epoch", "step", "train_loss")}
        epoch = prepare_metrics(
            {
                "epoch": entry["epoch"],
                "train_loss_epoch": entry["train_loss"],
                **{f"val_{key}": value for key, value in _numbers(scores).items()},
            }
        )
        values.update({(key, int(entry["step"])): value for key, value in epoch.items()})
    final = {f"best_val_{key}": value for key, value in _numbers(done.result.get("metrics") or {}).items()}
    if done.test_metrics is not None:
        final.update({f"test_{key}": value for key, value in _numbers(done.test_metrics).items()})
        final["test"] = {
            "per_type": done.test_metrics.get("per_type", {}),
            "span_per_type": done.test_metrics.get("span_per_type", {}),
        }
    values.update({(key, 0): value for key, value in prepare_metrics(final).items()})
    return values


def _tags(done: _Finished) -> dict[str, str]:
    """``tracking.tags``, the data fingerprint and the config hash."""
    from resume_ner.tracking.mlflow import prepare_tags

    return prepare_tags(
        {
            **done.config.tracking.tags,
            "resume_ner.data_fingerprint": done.result["data_fingerprint"],
            "resume_ner.config_hash": done.result["config_hash"],
        }
    )


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _remote_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Paths of the files under ``path`` in the run's artifacts (recursively)."""
    files: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        files |= _remote_files(client, run_id, info.path) if info.is_dir else {info.path}
    return files


def _local_files(directory: Path, prefix: str) -> set[str]:
    return {f"{prefix}/{path.relative_to(directory).as_posix()}" for path in directory.rglob("*") if path.is_file()}


Retry = Callable[..., Any]  # call_with_retry bound to the tracking URI: (what, call, transfer=False) -> value


def _recorded_run(client: MlflowClient, done: _Finished, uri: str, retry: Retry) -> Run | None:
    """The MLflow run recorded in ``train_result.json`` when it exists at ``uri``, else None; ``TrackingError``
    when it ended FAILED or KILLED."""
    from mlflow.exceptions import MlflowException

    run_id = done.result.get("run_id")
    if not run_id:
        return None

    def get_run() -> Run | None:
        try:
            return client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    run = retry(f"read run {run_id}", get_run)
    if run is not None and run.info.status not in ("RUNNING", "FINISHED"):
        raise TrackingError(
            f"MLflow run {run_id} of {done.directory} at {redact_credentials(uri)} ended {run.info.status}, so it "
            "is not completed: delete it, or relog to another --tracking-uri, to log this training to a new run"
        )
    return run


@dataclass
class _Missing:
    """What a run lacks of a finished training."""

    params: list[Param]
    tags: list[RunTag]
    metrics: list[Metric]
    files: list[str]  # top-level artifact files
    model: bool  # the model/ artifacts (some or all)

    def __bool__(self) -> bool:
        return bool(self.params or self.tags or self.metrics or self.files or self.model)


def _missing(client: MlflowClient, run: Run, done: _Finished, retry: Retry) -> _Missing:
    """What ``run`` lacks: ``TrackingError`` when it holds other values of this training's params."""
    from mlflow.entities import Metric, Param, RunTag

    run_id, params, logged = run.info.run_id, _params(done), run.data.params
    conflicts = [key for key, value in params.items() if key in logged and logged[key] != value]
    if conflicts:
        shown = ", ".join(f"{key}={logged[key]!r} (directory: {params[key]!r})" for key in conflicts[:3])
        raise TrackingError(
            f"MLflow run {run_id} holds other values of {len(conflicts)} param(s) than "
            f"{done.directory}: {shown}; it is another training's run"
        )
    metrics = _metrics(done)
    steps: dict[str, set[int]] = {}
    for key in sorted({key for key, _ in metrics if key in run.data.metrics}):
        steps[key] = {
            m.step for m in retry(f"read metric {key}", lambda key=key: client.get_metric_history(run_id, key))
        }
    now = int(time.time() * 1000)
    remote = retry("list artifacts", lambda: _remote_files(client, run_id))
    return _Missing(
        params=[Param(key, value) for key, value in params.items() if key not in logged],
        tags=[RunTag(key, value) for key, value in _tags(done).items() if run.data.tags.get(key) != value],
        metrics=[
            Metric(key, value, now, step) for (key, step), value in metrics.items() if step not in steps.get(key, set())
        ],
        files=[
            name
            for name in (RESULT_FILE, CONFIG_FILE, TEST_METRICS_FILE)
            if (done.directory / name).exists() and name not in remote
        ],
        model=done.config.tracking.log_checkpoint
        and not _local_files(done.directory / MODEL_DIRNAME, MODEL_DIRNAME) <= remote,
    )


def relog_output_dir(
    output_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
) -> RelogResult:
    """Log the finished training in ``output_dir`` to MLflow and end its run FINISHED (see the module docstring).

    URI: ``tracking_uri`` > ``$MLFLOW_TRACKING_URI`` > the one recorded in ``train_result.json`` (unless its
    credentials were redacted) > ``tracking.tracking_uri`` of ``config.yaml`` > the local default.
    ``experiment`` and ``run_name`` apply to a new run only. Raises ``TrackingError`` when MLflow cannot be
    reached or the recorded run cannot be completed, ``ConfigError`` / ``CheckpointError`` when the directory
    is not a complete training output.
    """
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    from resume_ner.tracking.mlflow import (
        MAX_METRICS_PER_BATCH,
        MAX_PARAMS_TAGS_PER_BATCH,
        call_with_retry,
        ensure_experiment,
        resolve_tracking_uri,
    )

    directory = Path(output_dir)
    done = _read_output_dir(directory)
    recorded = done.result.get("tracking_uri")
    usable = recorded if recorded and REDACTED not in recorded else None
    environment = os.environ.get(TRACKING_URI_ENV, "").strip()  # config.yaml is a config file: it wins over neither
    uri = resolve_tracking_uri(tracking_uri or environment or usable, done.config.tracking)
    client = MlflowClient(tracking_uri=uri)

    def retry(what: str, call: Callable[[], Any], transfer: bool = False) -> Any:
        return call_with_retry(what, call, tracking_uri=uri, transfer=transfer)

    relogged = {RELOGGED_TAG: str(directory.resolve())}
    run = _recorded_run(client, done, uri, retry)
    if run is None:
        name = experiment or done.config.tracking.experiment_name
        experiment_id = retry(f"open experiment {name!r}", lambda: ensure_experiment(client, name, uri))
        title = run_name or done.config.tracking.run_name or directory.resolve().name
        tags = {**_tags(done), **relogged}
        run = retry("create a run", lambda: client.create_run(experiment_id, run_name=title, tags=tags))
        write_json_atomic(
            directory / RESULT_FILE, {**done.result, "run_id": run.info.run_id, "tracking_uri": redact_credentials(uri)}
        )
        log.info("new MLflow run %r (%s) in experiment %r at %s", title, run.info.run_id, name, redact_credentials(uri))
    run_id = run.info.run_id
    outcome = RelogResult(run_id, redact_credentials(uri), created=run_id != done.result.get("run_id"))
    missing = _missing(client, run, done, retry)
    if missing and RELOGGED_TAG not in run.data.tags:
        missing.tags.append(RunTag(RELOGGED_TAG, relogged[RELOGGED_TAG]))
    for batch in _batches(missing.params, MAX_PARAMS_TAGS_PER_BATCH):
        retry("log params", partial(client.log_batch, run_id, params=batch, synchronous=True))
    for batch in _batches(missing.tags, MAX_PARAMS_TAGS_PER_BATCH):
        retry("set tags", partial(client.log_batch, run_id, tags=batch, synchronous=True))
    for batch in _batches(missing.metrics, MAX_METRICS_PER_BATCH):
        retry("log metrics", partial(client.log_batch, run_id, metrics=batch, synchronous=True))
    for name in missing.files:
        retry(f"upload {name}", partial(client.log_artifact, run_id, str(directory / name)), transfer=True)
    if missing.model:
        retry(
            f"upload {MODEL_DIRNAME}/",
            lambda: client.log_artifacts(run_id, str(directory / MODEL_DIRNAME), MODEL_DIRNAME),
            transfer=True,
        )
    if run.info.status != "FINISHED":
        retry("end the run", lambda: client.set_terminated(run_id, "FINISHED"))
    outcome.params, outcome.tags, outcome.metrics = len(missing.params), len(missing.tags), len(missing.metrics)
    outcome.artifacts = missing.files + ([f"{MODEL_DIRNAME}/"] if missing.model else [])
    outcome.ended = run.info.status != "FINISHED"
    return outcome
