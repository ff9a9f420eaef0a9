"""Talk to a Kubeflow Pipelines server (v2beta1 REST API, through ``kfp.Client``): connect, upload, run, schedule.

Every function takes a compiled pipeline package: the YAML the KFP compiler writes
(``pipelines/resume_ner_training.yaml``). Server failures become ``ResumeNerError``s that name the server
and the action; invalid input becomes a ``ConfigError`` before any request is sent.

Credentials: a bearer token (``token``, else ``$KFP_TOKEN``), or a kube context whose credentials reach KFP
through the Kubernetes API server's service proxy. Secrets are read from the environment, never logged and
never part of an error message.

Where this differs from plain ``kfp.Client``:

* its constructor probes ``/healthz`` and retries any HTTP error 5 times, 5 s apart; the client ``connect``
  returns probes once, so a rejected token fails at once, with the server's answer;
* with a kube context whose user has a token (exec plugins such as kubelogin included), the kubernetes
  client's refresh hook resets the host before every request, so kfp calls ``<API server>/apis/v2beta1/...``
  instead of the ml-pipeline service proxy; ``connect`` keeps the proxy address;
* ``kfp.Client.wait_for_run_completion`` does not treat CANCELED as final (it waits out the timeout);
  ``submit_run(wait=True)`` polls the run itself and stops at SUCCEEDED, SKIPPED, FAILED or CANCELED;
* the links kfp prints to stdout ("Run details: ...") go to stderr, so stdout stays for results.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resume_ner.errors import ConfigError, ResumeNerError

if TYPE_CHECKING:
    import kfp
    import kfp_server_api

log = logging.getLogger(__name__)

TOKEN_ENV = "KFP_TOKEN"
PORT_FORWARD = "kubectl port-forward svc/ml-pipeline-ui -n kubeflow 8080:80"
RUN_POLL_S = 5.0  # seconds between two reads of a run's state while waiting for it
FINAL_RUN_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
CRON_FIELDS = ("sec", "min", "hour", "dom", "month", "dow")
MAX_CONCURRENCY = 10  # the KFP API's upper bound for a recurring run's max_concurrency
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class UploadResult:
    """A pipeline version on the server; ``created_pipeline`` when this upload created the pipeline itself."""

    pipeline_id: str
    version_id: str
    pipeline_name: str
    version_name: str
    created_pipeline: bool


@dataclass(frozen=True)
class RunResult:
    """A submitted run; ``state`` is the last one read (final when waited for); ``url`` its page in the KFP UI."""

    run_id: str
    run_name: str
    experiment_id: str
    state: str | None
    url: str | None


@dataclass(frozen=True)
class ScheduleResult:
    """A recurring run (a scheduled job) created on the server."""

    recurring_run_id: str
    job_name: str
    experiment_id: str
    cron: str
    max_concurrency: int
    catchup: bool


def connect(
    host: str | None,
    *,
    token: str | None = None,
    kube_context: str | None = None,
    namespace: str | None = None,
    ssl_ca_cert: str | None = None,
) -> kfp.Client:
    """A ``kfp.Client`` for the KFP API at ``host`` (or through ``kube_context``), checked to answer.

    The token is ``token``, else ``$KFP_TOKEN`` when no kube context is given. ``namespace`` is the user's
    profile namespace on a multi-user deployment; the check lists one experiment there. With ``host=None``
    and no kube context, kfp uses its in-cluster service or the current kube context; inside a pod, kfp uses
    the in-cluster service whatever the kube context.
    """
    if kube_context is not None:
        if host or token:
            raise ConfigError(
                f"--kube-context {kube_context!r} reaches KFP through the Kubernetes API server with the context's "
                "own credentials; drop --host and the token, or drop --kube-context"
            )
        _check_kube_context(kube_context)
    elif token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if ssl_ca_cert is not None and not Path(ssl_ca_cert).is_file():
        raise ConfigError(f"--ssl-ca-cert {ssl_ca_cert}: no such file; pass the PEM bundle of the server's CA")
    where = host or (f"kube context {kube_context!r}" if kube_context else "kfp's default endpoint (in-cluster/kube)")
    with warnings.catch_warnings(), _quiet_retries():
        warnings.filterwarnings("ignore", "This client only works with", FutureWarning)
        with _kfp_call("connecting", where):
            client = _client_class()(
                host=host, existing_token=token, kube_context=kube_context, ssl_ca_cert=ssl_ca_cert
            )
            client.list_experiments(page_size=1, namespace=namespace)
    return client


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    """urllib3's retry warnings off while connecting: the connection error says it all, once. (kfp's API client
    sets the ``urllib3`` logger back to WARNING when it is built, so the child logger is set.)"""
    logger = logging.getLogger("urllib3.connectionpool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_pipeline_parameters(package_path: str | Path) -> dict[str, tuple[str, Any]]:
    """The pipeline's root parameters: ``{name: (KFP parameterType, default value or None)}``."""
    return _root_parameters(_load_pipeline_spec(package_path))


def parse_run_parameters(package_path: str | Path, items: list[str]) -> dict[str, Any]:
    """``["name=value", ...]`` as typed values of the pipeline's parameters (int, float, bool, str, list, dict).

    Booleans: true/false, yes/no, 1/0; lists and dicts: JSON or YAML (``[a, b]``, ``{"k": 1}``).
    """
    parameters = read_pipeline_parameters(package_path)
    values: dict[str, Any] = {}
    for item in items:
        name, separator, text = item.partition("=")
        name = name.strip()
        if not separator or not name:
            raise ConfigError(f"run parameter {item!r} is not NAME=VALUE (e.g. epochs=3)")
        _check_parameter_names([name], parameters, package_path)
        kind = parameters[name][0]
        if kind not in _PARSERS:
            raise ConfigError(f"run parameter {name!r} has KFP type {kind}, which cannot be set as NAME=VALUE")
        parse, expected = _PARSERS[kind]
        try:
            values[name] = parse(text)
        except (ValueError, KeyError, yaml.YAMLError):
            raise ConfigError(f"run parameter {name}={text!r}: expected {expected} (KFP type {kind})") from None
    return values


def upload_pipeline(
    client: kfp.Client,
    package_path: str | Path,
    *,
    pipeline_name: str,
    version_name: str | None = None,
    description: str | None = None,
) -> UploadResult:
    """Upload the package as pipeline ``pipeline_name``, or as a new version of it when it exists.

    A new version is named ``version_name``, by default ``<pipeline_name>-<UTC YYYYmmdd-HHMMSS>``. The first
    upload creates the pipeline with one version, which the server names after the pipeline.
    """
    path = str(package_path)
    _load_pipeline_spec(path)
    with _kfp_call(f"uploading pipeline {pipeline_name!r}"):
        pipeline_id = client.get_pipeline_id(pipeline_name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(path, pipeline_name=pipeline_name, description=description).pipeline_id
            versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
            if not versions.pipeline_versions:
                raise ResumeNerError(
                    f"the KFP server created pipeline {pipeline_name!r} ({pipeline_id}) with no "
                    "version; delete it in the KFP UI and upload again"
                )
            version = versions.pipeline_versions[0]
            return UploadResult(pipeline_id, version.pipeline_version_id, pipeline_name, version.display_name, True)
        name = version_name or f"{pipeline_name}-{_utc_stamp()}"
        version = client.upload_pipeline_version(path, name, pipeline_id=pipeline_id, description=description)
    return UploadResult(pipeline_id, version.pipeline_version_id, pipeline_name, version.display_name or name, False)


def submit_run(
    client: kfp.Client,
    package_path: str | Path,
    *,
    experiment: str,
    params: dict[str, Any],
    run_name: str | None = None,
    namespace: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
    wait: bool = False,
    timeout_s: float = 3600,
) -> RunResult:
    """Run the package in ``experiment`` (created when missing) with ``params``.

    ``run_name`` defaults to ``<pipeline name>-<UTC YYYYmmdd-HHMMSS>``. With ``wait``, poll the run until it
    ends: a run that does not succeed, or outlives ``timeout_s``, raises ``ResumeNerError``.
    """
    spec = _load_pipeline_spec(package_path)
    _check_parameter_names(params, _root_parameters(spec), package_path)
    if wait:
        check_wait(timeout_s)
    name = run_name or f"{spec['pipelineInfo']['name']}-{_utc_stamp()}"
    with _kfp_call(f"submitting run {name!r}"):
        run = client.create_run_from_pipeline_package(
            str(package_path),
            arguments=params,
            run_name=name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=enable_caching,
            service_account=service_account,
        ).run_info
        url = _ui_url(client, f"runs/details/{run.run_id}")
        if wait:
            run = _wait_for_run(client, run.run_id, name, timeout_s, url)
    if wait and run.state != "SUCCEEDED":
        reason = run.error.message if run.error is not None and run.error.message else "the server gave no reason"
        raise ResumeNerError(f"run {name!r} ({run.run_id}) ended {run.state}: {reason}; details: {url or 'the KFP UI'}")
    return RunResult(run.run_id, run.display_name or name, run.experiment_id, run.state, url)


def schedule_run(
    client: kfp.Client,
    package_path: str | Path,
    *,
    experiment: str,
    cron: str,
    job_name: str,
    params: dict[str, Any],
    max_concurrency: int = 1,
    catchup: bool = True,
    namespace: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
    start_time: str | None = None,
    end_time: str | None = None,
) -> ScheduleResult:
    """Schedule the package as recurring run ``job_name`` in ``experiment`` (created when missing).

    ``cron`` has 6 fields, ``sec min hour dom month dow`` (``0 0 2 * * 1``: Mondays 02:00). ``catchup=False``
    starts only the latest missed run after a pause. ``start_time``/``end_time``: RFC 3339 with an offset.
    """
    check_schedule(cron, max_concurrency, start_time=start_time, end_time=end_time)
    _check_parameter_names(params, read_pipeline_parameters(package_path), package_path)
    with _kfp_call(f"scheduling {job_name!r}"):
        experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            start_time=start_time,
            end_time=end_time,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=params,
            pipeline_package_path=str(package_path),
            enable_caching=enable_caching,
            service_account=service_account,
        )
    return ScheduleResult(
        job.recurring_run_id, job.display_name or job_name, experiment_id, cron, max_concurrency, catchup
    )


def check_schedule(
    cron: str, max_concurrency: int = 1, *, start_time: str | None = None, end_time: str | None = None
) -> None:
    """``ConfigError`` for a schedule KFP would refuse or misread (``schedule_run`` runs it before any request)."""
    _check_cron(cron)
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"max_concurrency {max_concurrency}: must be 1..{MAX_CONCURRENCY} concurrent runs")
    for label, value in (("start_time", start_time), ("end_time", end_time)):
        _check_rfc3339(label, value)


def check_wait(timeout_s: float) -> None:
    """``ConfigError`` for a ``--timeout`` that cannot be waited for."""
    if not timeout_s >= 0:
        raise ConfigError(f"--timeout {timeout_s:g}: must be a number of seconds, 0 or more")


def _parse_double(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_yaml(kind: type, text: str) -> Any:
    value = yaml.safe_load(text)
    if not isinstance(value, kind):
        raise ValueError(text)
    return value


# KFP parameterType -> (parser of a NAME=VALUE value, what it expects)
_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "NUMBER_INTEGER": (int, "an integer, e.g. 8"),
    "NUMBER_DOUBLE": (_parse_double, "a finite number, e.g. 3e-5"),
    "BOOLEAN": (lambda text: _BOOLEANS[text.strip().lower()], "true/false, yes/no or 1/0"),
    "STRING": (str, "a string"),
    "LIST": (functools.partial(_parse_yaml, list), "a JSON or YAML list, e.g. [a, b]"),
    "STRUCT": (functools.partial(_parse_yaml, dict), 'a JSON or YAML mapping, e.g. {"k": 1}'),
}


def _load_pipeline_spec(package_path: str | Path) -> dict[str, Any]:
    """The first YAML document of a compiled pipeline package (its PipelineSpec), checked to be one."""
    path = Path(package_path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(
            f"pipeline package {path}: expected the .yaml file the KFP compiler writes "
            "(e.g. pipelines/resume_ner_training.yaml)"
        )
    try:
        spec = next(yaml.safe_load_all(path.read_text(encoding="utf-8")), None)
    except FileNotFoundError:
        raise ConfigError(
            f"pipeline package {path} not found; compile the pipeline first: `resume-ner pipeline "
            "compile` (or `make compile`) writes pipelines/resume_ner_training.yaml, `resume-ner pipeline "
            "compile --cluster --out-root DIR` DIR/pipelines/resume_ner_training.yaml"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"pipeline package {path} cannot be read as YAML: {error}") from None
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or not isinstance(spec.get("root"), dict):
        raise ConfigError(
            f"{path} is not a compiled KFP pipeline (no pipelineInfo and root at its top); pass the "
            "YAML written by kfp.compiler.Compiler"
        )
    return spec


def _root_parameters(spec: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """``read_pipeline_parameters`` of a loaded spec."""
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    result: dict[str, tuple[str, Any]] = {}
    for name, definition in parameters.items():
        kind = definition.get("parameterType", "STRING")
        default = definition.get("defaultValue")
        if kind == "NUMBER_INTEGER" and isinstance(default, float) and default.is_integer():
            default = int(default)  # the compiler writes integer defaults as protobuf numbers (3.0)
        result[name] = (kind, default)
    return result


def _check_parameter_names(
    names: Iterable[str], parameters: dict[str, tuple[str, Any]], package_path: str | Path
) -> None:
    unknown = [name for name in names if name not in parameters]
    if unknown:
        raise ConfigError(
            f"unknown run parameter(s) {', '.join(map(repr, unknown))} for pipeline {package_path}; "
            f"its parameters are: {', '.join(sorted(parameters)) or '(none)'}"
        )


def _check_cron(cron: str) -> None:
    fields = cron.split()
    if len(fields) == len(CRON_FIELDS):
        return
    form = " ".join(CRON_FIELDS)
    if len(fields) == 5:
        raise ConfigError(
            f"cron {cron!r} has 5 fields, but KFP schedules take 6 ({form}): a 5-field crontab would "
            f"be read from seconds on; for the same schedule pass '0 {' '.join(fields)}'"
        )
    raise ConfigError(
        f"cron {cron!r} has {len(fields)} fields; KFP schedules take 6 ({form}), "
        "e.g. '0 0 2 * * 1' for Mondays at 02:00"
    )


def _check_rfc3339(label: str, value: str | None) -> None:
    if value is None:
        return
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ConfigError(f"{label} {value!r}: expected an RFC 3339 time with an offset, e.g. 2025-01-06T02:00:00Z")


def _check_kube_context(name: str) -> None:
    """Refuse a context the kubeconfig lacks (kfp.Client would print a warning and call http://localhost)."""
    from kubernetes import config as kube_config

    try:
        contexts, _ = kube_config.list_kube_config_contexts()
    except kube_config.ConfigException as error:
        raise ConfigError(
            f"--kube-context {name!r}: no usable kubeconfig ({error}); set $KUBECONFIG or fetch "
            "the cluster's credentials (e.g. az aks get-credentials)"
        ) from None
    known = sorted(context["name"] for context in contexts)
    if name not in known:
        raise ConfigError(f"--kube-context {name!r} is not in the kubeconfig; its contexts: {', '.join(known)}")


@functools.cache
def _client_class() -> type[kfp.Client]:
    """``kfp.Client`` with a one-try health probe and kube-context hosts that survive token refreshes."""
    import kfp

    class Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration: int = 5) -> kfp_server_api.V2beta1GetHealthzResponse:
            """The server's health report, in one try (kfp's own, run by its constructor, retries 5 times 5 s apart)."""
            return self.healthzs.healthz_service_get_healthz()

        def _load_config(self, *args: Any, **kwargs: Any) -> kfp_server_api.Configuration:
            """kfp's configuration, its host kept through credential refreshes.

            A kube context's token refresh hook (run before every request) resets the host to the API server's
            address, dropping the service-proxy path kfp appended to it (kubeflow/pipelines#8313), and installs
            itself again as the hook.
            """
            config = super()._load_config(*args, **kwargs)
            refresh, host = config.refresh_api_key_hook, config.host
            if refresh is not None:

                def refresh_keeping_host(configuration: kfp_server_api.Configuration) -> None:
                    refresh(configuration)
                    configuration.host = host
                    configuration.refresh_api_key_hook = refresh_keeping_host

                config.refresh_api_key_hook = refresh_keeping_host
            return config

    return Client


def _wait_for_run(
    client: kfp.Client, run_id: str, name: str, timeout_s: float, url: str | None
) -> kfp_server_api.V2beta1Run:
    """The run once it reaches a final state; ``ResumeNerError`` when it is still going after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = client.get_run(run_id)
        if run.state in FINAL_RUN_STATES:
            return run
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResumeNerError(
                f"run {name!r} ({run_id}) is still {run.state} after {timeout_s:g} s of waiting and "
                f"keeps running on the server: follow it at {url or 'the KFP UI'}, or wait longer"
            )
        log.info("run %s is %s; next check in %.0f s", run_id, run.state, min(RUN_POLL_S, left))
        time.sleep(min(RUN_POLL_S, left))


def _ui_url(client: kfp.Client, fragment: str) -> str | None:
    """The KFP UI page ``fragment`` (e.g. ``runs/details/<id>``), or None when kfp knows no absolute UI address."""
    prefix = client._get_url_prefix()  # kfp's own: $KF_PIPELINES_UI_ENDPOINT, else the host
    return f"{prefix.rstrip('/')}/#/{fragment}" if prefix.startswith(("http://", "https://")) else None


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


@contextlib.contextmanager
def _kfp_call(action: str, where: str = "the KFP server") -> Iterator[None]:
    """Run kfp.Client calls with their stdout prints sent to stderr and their failures as ``ResumeNerError``s."""
    import kfp_server_api
    import urllib3

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except kfp_server_api.ApiException as error:
        raise _api_error(error, action, where) from error
    except urllib3.exceptions.HTTPError as error:
        reason = getattr(error, "reason", None) or error
        raise ResumeNerError(
            f"cannot reach the KFP API at {where} while {action}: {reason}. Check --host; for KFP inside a cluster, "
            f"run `{PORT_FORWARD}` and pass --host http://localhost:8080"
        ) from error
    except ValueError as error:  # kfp's own checks: two pipelines or experiments of one name, a bad package
        raise ResumeNerError(f"{action} at {where} failed: {error}") from error


def _api_error(error: kfp_server_api.ApiException, action: str, where: str) -> ResumeNerError:
    """A ``ResumeNerError`` for an HTTP error answer (or, status 0, a TLS failure) of the KFP API."""
    if not error.status:
        return ResumeNerError(
            f"TLS failure talking to {where} while {action}: {error.reason}; pass the server's CA "
            "bundle with --ssl-ca-cert"
        )
    detail = _server_message(error.body) or error.reason
    if error.status in (401, 403):
        return ResumeNerError(
            f"authentication failed at {where} while {action}: {error.status} {error.reason}: "
            f"{detail}; pass a token in ${TOKEN_ENV} or --kube-context"
        )
    return ResumeNerError(f"the KFP API at {where} answered {error.status} {error.reason} while {action}: {detail}")


def _server_message(body: str | bytes | None) -> str:
    """The message of a KFP error body (``{"error"|"message": ...}``), else the body's start."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("error") or text)[:500]
    return text[:500]
