"""Lineage of registered models: the tags that link them, registration, and the walk back to the sweep.

A final training run carries the lineage tags (``final_run_tags``): which study and best trial its
settings came from, the sweep's parent run, and the fingerprints of its data. ``register_model`` makes its
logged checkpoint a new version in the MLflow Model Registry, copies those tags onto the version, moves the
``candidate`` alias to it, and moves ``champion`` to it only when it beats the current champion's test
f1_micro on the same test documents (or ``promote=True``). ``extract_lineage_from_best_model`` walks back
from a version: version -> final run -> best trial run -> sweep parent run, and names any missing link.

``mlflow`` is imported inside the functions that need it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from resume_ner.config import TrackingConfig
from resume_ner.errors import TrackingError
from resume_ner.io import write_json_atomic
from resume_ner.layout import CRF_FILE, MLFLOW_MODEL_DIRNAME, MODEL_DIRNAME
from resume_ner.redaction import redact_credentials
from resume_ner.tracking.mlflow import resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "CANDIDATE_ALIAS",
    "CHAMPION_ALIAS",
    "Lineage",
    "RegisteredVersion",
    "check_best_trial_runs",
    "extract_lineage_from_best_model",
    "final_run_tags",
    "register_model",
    "write_lineage",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
PROMOTION_METRIC = "f1_micro"  # test metric that decides champion

STAGE_TAG = "resume_ner.stage"
FINAL_STAGE = "final"
STUDY_TAG = "resume_ner.study"
TRIAL_NUMBER_TAG = "resume_ner.best_trial_number"
TRIAL_RUN_TAG = "resume_ner.best_trial_run_id"
SWEEP_PARENT_TAG = "resume_ner.sweep_parent_run_id"
DATA_FINGERPRINT_TAG = "resume_ner.data_fingerprint"
TEST_FINGERPRINT_TAG = "resume_ner.test_data_fingerprint"
CONFIG_HASH_TAG = "resume_ner.config_hash"
CODE_VERSION_TAG = "resume_ner.version"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
TEST_METRIC_TAG = f"resume_ner.test_{PROMOTION_METRIC}"
MLFLOW_PARENT_TAG = "mlflow.parentRunId"
BEST_TRIAL_PARAM_PREFIX = "best_trial."
SAMPLED_PARAM_PREFIX = "sampled."  # params of a trial run: the values its sampler chose
TRIAL_RUN_NUMBER_TAG = "resume_ner.trial_number"  # tag of a trial run
MODEL_URI_PREFIX = "models:/"
PIPELINE_RUN_TAG = "resume_ner.pipeline_run_id"  # set on every MLflow run of a Kubeflow pipeline run
TRIAL_STATE_TAG = "resume_ner.trial_state"
MAX_TRIAL_RUNS = 1000

# Tags of the final run copied onto its registered version.
VERSION_TAGS = (
    STAGE_TAG,
    STUDY_TAG,
    TRIAL_NUMBER_TAG,
    TRIAL_RUN_TAG,
    SWEEP_PARENT_TAG,
    DATA_FINGERPRINT_TAG,
    CONFIG_HASH_TAG,
    CODE_VERSION_TAG,
    GIT_COMMIT_TAG,
    PIPELINE_RUN_TAG,
)
# Artifacts a logged checkpoint directory must hold to be registered.
CHECKPOINT_ARTIFACTS = ("model.safetensors", "config.json", "resume_ner.json")
# Params of the final run summarised in its lineage.
SUMMARY_PARAM_PREFIXES = ("model.", "training.", "derived.")


# --- tags of the final run ---------------------------------------------------------------------------------


def final_run_tags(best: Mapping[str, Any], *, test_data_fingerprint: str | None) -> dict[str, str]:
    """The lineage tags of a final training run trained with the settings of ``best`` (a ``BestTrial`` dict).

    ``resume_ner.stage=final``, the study, the best trial's number and MLflow run id, the sweep's parent run
    id and the test documents' fingerprint; absent values (a sweep without tracking) are left out.
    """
    values = {
        STAGE_TAG: FINAL_STAGE,
        STUDY_TAG: best.get("study_name"),
        TRIAL_NUMBER_TAG: best.get("number"),
        TRIAL_RUN_TAG: best.get("mlflow_run_id"),
        SWEEP_PARENT_TAG: best.get("parent_run_id"),
        TEST_FINGERPRINT_TAG: test_data_fingerprint,
    }
    return {key: str(value) for key, value in values.items() if value is not None}


# --- MLflow access -----------------------------------------------------------------------------------------


def _client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    """An ``MlflowClient`` on the resolved tracking URI (its registry is on the same store), and that URI as shown
    in messages and lineage (credentials redacted)."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri, TrackingConfig())
    return MlflowClient(tracking_uri=uri), redact_credentials(uri)


def _registry_call(uri: str, what: str, call: Callable[[], T]) -> T:
    """``call()``, with an MLflow failure raised as a ``TrackingError`` naming ``what`` and the store."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow at {uri}: cannot {what}: {exc}. "
            "Check that the tracking server is reachable and --tracking-uri / $MLFLOW_TRACKING_URI points at it."
        ) from exc


def _lookup(uri: str, what: str, call: Callable[[], T]) -> T | None:
    """``call()``, or None when MLflow says the model, version or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise TrackingError(f"MLflow at {uri}: cannot read {what}: {exc}") from exc


def _linked_run(client: MlflowClient, run_id: str | None, link: str, where: str, uri: str) -> Run:
    """The run ``run_id`` that ``link`` points to, or a ``TrackingError`` saying that link is missing."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        raise TrackingError(f"lineage of {where}: missing link {link}: no run id recorded")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(f"MLflow at {uri}: cannot read run {run_id} ({link}): {exc}") from exc
        raise TrackingError(
            f"lineage of {where}: missing link {link}: run {run_id} does not exist at {uri} "
            "(another tracking server, or the run was purged)"
        ) from None
    if run.info.lifecycle_stage == "deleted":
        raise TrackingError(
            f"lineage of {where}: missing link {link}: run {run_id} was deleted at {uri}; "
            "restore it (`mlflow runs restore --run-id ...`) to see the lineage"
        )
    return run


def _required_tag(run: Run, tag: str, link: str, where: str) -> str:
    value = run.data.tags.get(tag)
    if not value:
        raise TrackingError(
            f"lineage of {where}: missing link {link}: run {run.info.run_id} has no tag {tag!r} "
            "(it was not trained by `resume-ner final-train` from an HPO study, or the tag was removed)"
        )
    return value


def check_best_trial_runs(best: Mapping[str, Any], tracking_uri: str | None = None) -> None:
    """Check, before a final training, that the runs its lineage will point to exist on the tracking server.

    ``best`` is a ``BestTrial`` dict; its ``mlflow_run_id`` (the trial run) and ``parent_run_id`` (the
    sweep's parent run) must both be set and readable at ``tracking_uri``, else ``TrackingError``.
    """
    where = f"best trial #{best.get('number')} of study {best.get('study_name')!r}"
    links = {"mlflow_run_id": "final run -> best trial run", "parent_run_id": "final run -> sweep parent run"}
    for key in links:
        if not best.get(key):
            raise TrackingError(
                f"{where} has no {key} (the sweep ran without MLflow tracking): a registered model could not "
                "name it; rerun the sweep with tracking enabled, or pass --no-register"
            )
    client, uri = _client(tracking_uri)
    for key, link in links.items():
        _linked_run(client, str(best[key]), link, where, uri)


# --- registration ------------------------------------------------------------------------------------------


@dataclass
class RegisteredVersion:
    """A model version just registered, its aliases, and whether (and why) it became champion."""

    name: str
    version: str
    source: str
    run_id: str
    aliases: list[str]
    promoted: bool
    reason: str
    previous_champion: str | None = None  # version that held ``champion`` before, if any

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"{MODEL_URI_PREFIX}{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``model_uri`` included)."""
        return {**asdict(self), "model_uri": self.model_uri}


def _check_checkpoint_logged(client: MlflowClient, run: Run, artifact_path: str, uri: str) -> None:
    """Refuse a run whose logged checkpoint lacks a file (``CHECKPOINT_ARTIFACTS``, and ``crf.safetensors`` for
    a run trained with ``model.head: crf``)."""

    run_id = run.info.run_id
    listed = _registry_call(
        uri, f"list the artifacts of run {run_id}", lambda: client.list_artifacts(run_id, artifact_path)
    )
    present = {Path(item.path).name for item in listed}
    required = CHECKPOINT_ARTIFACTS + ((CRF_FILE,) if run.data.params.get("model.head") == "crf" else ())
    missing = [name for name in required if name not in present]
    if missing:
        raise TrackingError(
            f"run {run_id} at {uri} has no complete checkpoint under artifact path {artifact_path!r} "
            f"(missing {', '.join(missing)}): tracking.log_checkpoint was off or the upload failed; "
            "train again with tracking.log_checkpoint=true"
        )


def _promotion(
    champion: ModelVersion | None, score: float, test_data_fingerprint: str, promote: bool
) -> tuple[bool, str]:
    """Whether the new version becomes champion, and why (or why not)."""
    if promote:
        held = f" (replacing version {champion.version})" if champion is not None else ""
        return True, f"promoted by request{held}"
    if champion is None:
        return True, f"no {CHAMPION_ALIAS} yet"
    their_fingerprint = champion.tags.get(TEST_FINGERPRINT_TAG)
    if their_fingerprint != test_data_fingerprint:
        return False, (
            f"{CHAMPION_ALIAS} version {champion.version} was tested on other test documents "
            f"(test fingerprint {str(their_fingerprint)[:12]} vs {test_data_fingerprint[:12]}): the scores are "
            "not comparable; pass --promote to replace it anyway"
        )
    try:
        theirs = float(champion.tags[TEST_METRIC_TAG])
    except (KeyError, ValueError):
        return False, (
            f"{CHAMPION_ALIAS} version {champion.version} has no {TEST_METRIC_TAG} tag to compare with; "
            "pass --promote to replace it"
        )
    if score > theirs:
        return (
            True,
            f"test {PROMOTION_METRIC} {score:.4f} beats {CHAMPION_ALIAS} version {champion.version}'s {theirs:.4f}",
        )
    return False, (
        f"test {PROMOTION_METRIC} {score:.4f} does not beat {CHAMPION_ALIAS} version {champion.version}'s "
        f"{theirs:.4f} on the same test documents"
    )


def _check_mlflow_model_logged(client: Any, run_id: str, artifact_path: str, uri: str) -> None:
    """Refuse a run without an MLflow model (an ``MLmodel`` file) under ``artifact_path``."""
    listed = _registry_call(
        uri, f"list the artifacts of run {run_id}", lambda: client.list_artifacts(run_id, artifact_path)
    )
    if not any(Path(item.path).name == "MLmodel" for item in listed):
        raise TrackingError(
            f"run {run_id} at {uri} has no MLflow model under artifact path {artifact_path!r}: log one first "
            "(resume_ner.serving.mlflow_model.log_serving_model; resume-ner register and the pipelines do)"
        )


def register_model(
    run_id: str,
    model_dir_artifact_path: str = MODEL_DIRNAME,
    *,
    source_artifact_path: str = MLFLOW_MODEL_DIRNAME,
    name: str,
    test_metrics: Mapping[str, Any],
    test_data_fingerprint: str,
    promote: bool = False,
    tracking_uri: str | None = None,
) -> RegisteredVersion:
    """Register the MLflow model logged by run ``run_id`` as a new version of model ``name``.

    The source is ``runs:/<run_id>/<source_artifact_path>``, the MLflow pyfunc model of the checkpoint that the
    run logged under ``model_dir_artifact_path`` (both must be complete). The registered model is created when
    missing. The version gets the run's lineage tags plus
    ``resume_ner.test_data_fingerprint`` and ``resume_ner.test_f1_micro``, the alias ``candidate``, and the
    alias ``champion`` when its test f1_micro beats the current champion's on the same test fingerprint,
    when there is no champion, or when ``promote`` is True. Raises ``TrackingError`` when the run or its
    checkpoint artifacts are missing or the registry cannot be written.
    """
    from mlflow.exceptions import MlflowException

    if PROMOTION_METRIC not in test_metrics:
        raise ValueError(f"register_model: test_metrics has no {PROMOTION_METRIC!r} (got {sorted(test_metrics)})")
    score = float(test_metrics[PROMOTION_METRIC])
    client, uri = _client(tracking_uri)
    run = _linked_run(client, run_id, "version -> final run", f"model {name!r}", uri)
    _check_checkpoint_logged(client, run, model_dir_artifact_path, uri)
    _check_mlflow_model_logged(client, run_id, source_artifact_path, uri)

    def ensure_registered_model() -> None:
        try:
            client.create_registered_model(name, description="resume-ner entity extraction (MLflow pyfunc)")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # else it exists (or another run created it now)
                raise

    _registry_call(uri, f"create registered model {name!r}", ensure_registered_model)
    tags = {key: run.data.tags[key] for key in VERSION_TAGS if run.data.tags.get(key)}
    tags.update({TEST_FINGERPRINT_TAG: test_data_fingerprint, TEST_METRIC_TAG: repr(score)})
    source = f"runs:/{run_id}/{source_artifact_path}"
    created = _registry_call(
        uri,
        f"create a version of {name!r} from {source}",
        lambda: client.create_model_version(name, source, run_id=run_id, tags=tags),
    )
    version = str(created.version)
    champion = _lookup(uri, f"{name}@{CHAMPION_ALIAS}", lambda: client.get_model_version_by_alias(name, CHAMPION_ALIAS))
    promoted, reason = _promotion(champion, score, test_data_fingerprint, promote)
    _registry_call(
        uri,
        f"set alias {name}@{CANDIDATE_ALIAS}",
        lambda: client.set_registered_model_alias(name, CANDIDATE_ALIAS, version),
    )
    aliases = [CANDIDATE_ALIAS]
    if promoted:
        _registry_call(
            uri,
            f"set alias {name}@{CHAMPION_ALIAS}",
            lambda: client.set_registered_model_alias(name, CHAMPION_ALIAS, version),
        )
        aliases.append(CHAMPION_ALIAS)
    log.info(
        "registered %s version %s from %s (aliases: %s); %s %s: %s",
        name,
        version,
        source,
        ", ".join(aliases),
        CHAMPION_ALIAS,
        "moved" if promoted else "unchanged",
        reason,
    )
    return RegisteredVersion(
        name=name,
        version=version,
        source=source,
        run_id=run_id,
        aliases=aliases,
        promoted=promoted,
        reason=reason,
        previous_champion=str(champion.version) if champion is not None else None,
    )


# --- lineage -----------------------------------------------------------------------------------------------


@dataclass
class Lineage:
    """Where a registered model version comes from, from the version back to its data."""

    model_name: str
    version: str
    aliases: list[str]
    source: str
    final_run_id: str
    final_run_params: dict[str, str]  # model.*, training.*, derived.* params of the final run
    final_run_metrics: dict[str, float]  # test_* metrics of the final run
    study_name: str
    best_trial_number: int
    best_trial_run_id: str
    best_trial_params: dict[str, str]  # the winning settings, as the trial run logged them
    sweep_parent_run_id: str
    data_fingerprint: str | None
    test_data_fingerprint: str | None
    config_hash: str | None
    code_version: str | None
    git_commit: str | None
    created: str  # UTC time the version was registered (ISO 8601)
    tracking_uri: str = ""  # credentials redacted
    warnings: list[str] = field(default_factory=list)  # inconsistencies found along the way
    trials: list[dict[str, Any]] = field(default_factory=list)  # every trial run under the sweep parent run
    pipeline_run_id: str | None = None  # the Kubeflow pipeline run that trained it, if any

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    def render(self) -> str:
        """The path as text: model version -> final run -> sweep -> best trial (params) -> data."""
        test_score = self.final_run_metrics.get(f"test_{PROMOTION_METRIC}")
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.best_trial_params.items())) or "(no params)"
        code = self.code_version or "?"
        if self.git_commit:
            code += f" @ {self.git_commit[:12]}"
        lines = [
            f"model     {self.model_name} version {self.version} "
            f"(aliases: {', '.join(self.aliases) or 'none'}; registered {self.created})",
            f"          source {self.source}",
            f"  <- final run   {self.final_run_id}"
            + (f" (test {PROMOTION_METRIC} {test_score:.4f})" if test_score is not None else ""),
            f"  <- sweep       study {self.study_name!r}, parent run {self.sweep_parent_run_id}",
            f"  <- best trial  #{self.best_trial_number}, run {self.best_trial_run_id}: {params}",
            f"  <- data        fingerprint {self.data_fingerprint or '?'}",
            f"                 test fingerprint {self.test_data_fingerprint or '?'}",
            f"     config {self.config_hash or '?'}, code resume-ner {code}",
        ]
        if self.trials:
            states = Counter(str(trial.get("state")) for trial in self.trials)
            numbers = ", ".join(f"#{trial['number']}" for trial in self.trials)
            lines.append(
                f"     trials of the sweep: {numbers} ("
                + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
                + ")"
            )
        if self.pipeline_run_id:
            lines.append(f"     pipeline run {self.pipeline_run_id}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _parse_model(model: str) -> tuple[str, str | None, str | None]:
    """``name``, ``name@alias``, ``name/version`` (optionally prefixed ``models:/``) -> (name, alias, version)."""
    spec = model.strip()
    if spec.startswith(MODEL_URI_PREFIX):
        spec = spec[len(MODEL_URI_PREFIX) :]
    if "@" in spec:
        name, alias = spec.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in spec:
        name, version = spec.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    elif spec:
        return spec, None, None
    raise TrackingError(
        f"model {model!r}: expected NAME, NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS, e.g. resume-ner@champion"
    )


def _model_version(client: MlflowClient, model: str, uri: str) -> ModelVersion:
    """The registry version ``model`` names; a plain name means ``champion``, else the latest version."""
    name, alias, version = _parse_model(model)
    if version is not None:
        found = _lookup(uri, model, lambda: client.get_model_version(name, version))
    elif alias is not None:
        found = _lookup(uri, model, lambda: client.get_model_version_by_alias(name, alias))
    else:
        found = _lookup(uri, model, lambda: client.get_model_version_by_alias(name, CHAMPION_ALIAS))
        if found is None:
            versions: list[ModelVersion] = (
                _lookup(uri, model, lambda: client.search_model_versions(f"name = '{name}'")) or []
            )
            found = max(versions, key=lambda v: int(v.version), default=None)
    if found is None:
        raise TrackingError(
            f"model {model!r} not found in the MLflow registry at {uri}: no such registered model, version or "
            "alias. Check the name (tracking.registered_model_name) and --tracking-uri, or run "
            "`resume-ner final-train` first."
        )
    return found


def _trial_params(final: Run, trial: Run, where: str, warnings: list[str]) -> dict[str, str]:
    """The searched params (``best_trial.*`` of the final run) with the values the trial run logged
    (``sampled.<path>``, else the ``<path>`` of its whole config)."""
    applied = {
        key[len(BEST_TRIAL_PARAM_PREFIX) :]: value
        for key, value in final.data.params.items()
        if key.startswith(BEST_TRIAL_PARAM_PREFIX)
    }
    params = {}
    for key, value in applied.items():
        logged = trial.data.params.get(f"{SAMPLED_PARAM_PREFIX}{key}", trial.data.params.get(key))
        if logged is not None and logged != value:
            warnings.append(f"{where}: best trial run logged {key}={logged} but the final run applied {value}")
        params[key] = logged if logged is not None else value
    return params


def extract_lineage_from_best_model(model: str, tracking_uri: str | None = None) -> Lineage:
    """Walk from a registered version back to its final run, best trial run and sweep parent run.

    ``model`` is ``name``, ``name@alias``, ``name/version``, ``models:/name@alias`` or
    ``models:/name/version``; a plain name means the ``champion`` alias if set, else the latest version.
    A link that is missing (no tag, or a run that does not exist or was deleted) raises ``TrackingError``
    naming the link.
    """
    client, uri = _client(tracking_uri)
    version = _model_version(client, model, uri)
    where = f"{version.name} version {version.version}"
    final = _linked_run(client, version.run_id, "version -> final run", where, uri)
    tags = final.data.tags
    trial = _linked_run(
        client,
        _required_tag(final, TRIAL_RUN_TAG, "final run -> best trial run", where),
        "final run -> best trial run",
        where,
        uri,
    )
    parent_id = _required_tag(final, SWEEP_PARENT_TAG, "final run -> sweep parent run", where)
    parent = _linked_run(client, parent_id, "final run -> sweep parent run", where, uri)
    warnings: list[str] = []
    trial_params = _trial_params(final, trial, where, warnings)
    expected = {
        MLFLOW_PARENT_TAG: parent.info.run_id,
        STUDY_TAG: tags.get(STUDY_TAG),
        TRIAL_RUN_NUMBER_TAG: tags.get(TRIAL_NUMBER_TAG),
    }
    for tag, value in expected.items():
        logged = trial.data.tags.get(tag)
        if logged is not None and logged != value:
            warnings.append(
                f"{where}: best trial run {trial.info.run_id} has {tag}={logged}, but the final run names {value}"
            )
    for message in warnings:
        log.warning("%s", message)
    version_tags = version.tags or {}
    children = f"tags.`{MLFLOW_PARENT_TAG}` = '{parent.info.run_id}'"
    trial_runs = _registry_call(
        uri,
        f"list the trial runs of sweep parent run {parent.info.run_id}",
        lambda: client.search_runs([parent.info.experiment_id], filter_string=children, max_results=MAX_TRIAL_RUNS),
    )
    return Lineage(
        model_name=version.name,
        version=str(version.version),
        aliases=sorted(version.aliases or []),
        source=cast(str, version.source),  # a version is created from a source
        final_run_id=final.info.run_id,
        final_run_params={k: v for k, v in sorted(final.data.params.items()) if k.startswith(SUMMARY_PARAM_PREFIXES)},
        final_run_metrics={k: v for k, v in sorted(final.data.metrics.items()) if k.startswith("test_")},
        study_name=_required_tag(final, STUDY_TAG, "final run -> study", where),
        best_trial_number=int(_required_tag(final, TRIAL_NUMBER_TAG, "final run -> best trial number", where)),
        best_trial_run_id=trial.info.run_id,
        best_trial_params=trial_params,
        sweep_parent_run_id=parent.info.run_id,
        data_fingerprint=tags.get(DATA_FINGERPRINT_TAG),
        test_data_fingerprint=version_tags.get(TEST_FINGERPRINT_TAG) or tags.get(TEST_FINGERPRINT_TAG),
        config_hash=tags.get(CONFIG_HASH_TAG),
        code_version=tags.get(CODE_VERSION_TAG),
        git_commit=tags.get(GIT_COMMIT_TAG),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(version.creation_timestamp / 1000)),
        tracking_uri=uri,
        warnings=warnings,
        trials=_trial_summaries(trial_runs),
        pipeline_run_id=tags.get(PIPELINE_RUN_TAG),
    )


def _trial_summaries(runs: list[Any]) -> list[dict[str, Any]]:
    """Number, state and run id of each trial run (by number; a retried trial appears once per run)."""
    out = []
    for run in runs:
        number = run.data.tags.get(TRIAL_RUN_NUMBER_TAG)
        if number is None or not number.lstrip("-").isdigit():
            continue
        out.append(
            {
                "number": int(number),
                "state": run.data.tags.get(TRIAL_STATE_TAG, run.info.status),
                "run_id": run.info.run_id,
            }
        )
    return sorted(out, key=lambda trial: (trial["number"], trial["run_id"]))


def write_lineage(lineage: Lineage, path: str | Path) -> Path:
    """Write ``lineage`` as JSON to ``path`` atomically."""
    return write_json_atomic(Path(path), lineage.to_dict())
