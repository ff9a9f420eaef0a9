"""The Kubeflow Training Operator ``PyTorchJob`` of multi-node final training: build it, submit it, wait for it.

``build_pytorchjob(config, ...)`` returns a ``kubeflow.org/v1`` PyTorchJob as a plain, JSON-able dict: one Master
and ``replicas - 1`` Workers, each a pod of the project image running::

    torchrun -m resume_ner.cli.train ARGS

The Training Operator (v1.8/v1.9) sets the rendezvous in every pod (``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``; ``PET_RDZV_*`` with an elastic policy) and torchrun
reads it, so the arguments name no host. As for the pipeline's ``final_train``, the ``pipeline`` config section
gives the GPU accelerator, node selector and tolerations (off with ``pipeline.gpu: false``), CPU and memory
(``pipeline.resources["final_train"]``), the MLflow credentials (``secretKeyRef``s of ``pipeline.mlflow_secret``,
never a value), the volume (``pipeline.volume_claim``) and the service account (``pipeline.job_service_account``,
without an API token: training needs no Kubernetes API). Pods run as user 10001 without privileges, on a
read-only root file system with memory-backed ``/dev/shm`` (NCCL, DataLoader workers) and emptyDirs ``/tmp``
and ``$HOME``, and without an Istio sidecar (a sidecar keeps a finished pod running, so the job never completes).

``submit_pytorchjob_and_wait(job, namespace=...)`` creates it through the Kubernetes API, polls its conditions
(Created -> Running -> Succeeded | Failed) and returns a ``PyTorchJobResult``; a failed job raises a
``ResumeNerError`` naming the failed replica, the operator's message and the tail of that replica's log.
``render_pytorchjob_yaml(job)`` is the manifest as YAML, for ``kubectl apply -f -``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import yaml

from resume_ner.config import ResumeNerConfig, resolve_image
from resume_ner.errors import ConfigError, ResumeNerError
from resume_ner.layout import TRACKING_URI_ENV, TRAIN_ENTRYPOINT
from resume_ner.redaction import has_credentials, redact_credentials
from resume_ner.tracking.mlflow import given_tracking_uri

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CustomObjectsApi

log = logging.getLogger(__name__)

GROUP = "kubeflow.org"
VERSION = "v1"
PLURAL = "pytorchjobs"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the operator finds the training container, and its port, by this name
PORT_NAME = "pytorchjob-port"
PORT = 23456  # the operator's default rendezvous port
RUN_AS_USER = 10001
HOME = "/home/resume-ner"  # the image's writable home (images/Dockerfile)
LABELS = {"app.kubernetes.io/name": "resume-ner", "app.kubernetes.io/component": "final-train"}
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"  # the operator's value: the replica type in lower case
NPROC_WORDS = ("auto", "gpu", "cpu")
CLEAN_POD_POLICIES = ("None", "Running", "All")
CLEANUP_POLICIES = ("always", "on-success", "never")
FINAL_STATES = ("Succeeded", "Failed")
MAX_NAME_LENGTH = 63
LOG_TAIL_LINES = 50
REQUEST_TIMEOUT_S = 30.0  # of each API request
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MAX_POLL_FAILURES = 5  # consecutive failed reads of the job (network, 429, 5xx) before giving up
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class PyTorchJobResult:
    """A finished PyTorchJob: final state, the operator's conditions, the failed replica (if any), wall seconds."""

    name: str
    namespace: str
    state: str
    conditions: list[dict[str, Any]]
    failed_replica: str | None
    message: str
    seconds: float


@dataclass(frozen=True)
class _Target:
    """The job a request is about, and the API server it goes to."""

    name: str
    namespace: str
    host: str

    def __str__(self) -> str:
        return f"PyTorchJob {self.namespace}/{self.name}"


def build_pytorchjob(
    config: ResumeNerConfig,
    *,
    name: str,
    namespace: str,
    replicas: int,
    nproc_per_node: int | str = 1,
    gpus_per_replica: int = 0,
    args: list[str],
    image: str | None = None,
    elastic: tuple[int, int] | None = None,
    backoff_limit: int = 2,
    clean_pod_policy: str = "None",
    ttl_seconds_after_finished: int | None = 86400,
    env: dict[str, str] | None = None,
    entrypoint: str = TRAIN_ENTRYPOINT,
) -> dict[str, Any]:
    """A ``kubeflow.org/v1`` PyTorchJob of ``replicas`` nodes (1 Master, ``replicas - 1`` Workers) as a plain dict.

    Each node runs ``torchrun -m <entrypoint> *args`` (default ``resume_ner.cli.train``; the pipeline's
    final training runs ``resume_ner.cli.main final-train ...``) with ``nproc_per_node`` processes (an int, or
    ``auto``/``gpu``/``cpu``) and ``gpus_per_replica`` GPUs (none when ``pipeline.gpu`` is false). ``image``
    defaults to ``$RESUME_NER_IMAGE``, else ``pipeline.image``. ``elastic=(min, max)`` adds a c10d elastic policy
    of min..max nodes. ``env`` adds environment variables (and wins over the defaults). Every invalid argument is
    reported at once in a ``ConfigError``; so is a credential in a plain-text value (a URL's ``user:password@``
    in the tracking URI, ``env`` or ``args``), which belongs in the Secret ``pipeline.mlflow_secret``.
    """
    gpus = gpus_per_replica if config.pipeline.gpu else 0
    _check_job_arguments(
        name=name,
        namespace=namespace,
        replicas=replicas,
        nproc_per_node=nproc_per_node,
        gpus_per_replica=gpus_per_replica,
        gpus=gpus,
        args=args,
        elastic=elastic,
        backoff_limit=backoff_limit,
        clean_pod_policy=clean_pod_policy,
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        env=_environment_values(config, env),
    )
    if image is None:
        image = resolve_image(config)
    run_policy: dict[str, Any] = {"cleanPodPolicy": clean_pod_policy, "backoffLimit": backoff_limit}
    if ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    replica_specs = {
        replica_type: {
            "replicas": count,
            "restartPolicy": "OnFailure",
            "template": _pod_template(config, image=image, args=[entrypoint, *args], gpus=gpus, env=env),
        }
        for replica_type, count in (("Master", 1), ("Worker", replicas - 1))
        if count > 0
    }
    spec: dict[str, Any] = {
        "runPolicy": run_policy,
        "nprocPerNode": str(nproc_per_node),
        "pytorchReplicaSpecs": replica_specs,
    }
    if elastic is not None:
        spec["elasticPolicy"] = {
            "minReplicas": elastic[0],
            "maxReplicas": elastic[1],
            "rdzvBackend": "c10d",
            "maxRestarts": backoff_limit,
        }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
        "spec": spec,
    }


def current_namespace(default: str = "resume-ner") -> str:
    """The namespace this pod runs in (``$POD_NAMESPACE``, else its service account's), else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    service_account = Path(SERVICE_ACCOUNT_NAMESPACE_FILE)
    if service_account.is_file():
        return service_account.read_text(encoding="utf-8").strip() or default
    return default


def render_pytorchjob_yaml(job: dict[str, Any]) -> str:
    """``job`` as a YAML document, keys in manifest order, without anchors or aliases."""
    return yaml.dump(job, Dumper=_NoAliasDumper, sort_keys=False)


def submit_pytorchjob_and_wait(
    job: dict[str, Any],
    *,
    namespace: str,
    timeout_s: float = 6 * 3600,
    poll_interval_s: float = 10,
    cleanup: str = "on-success",
    api_client: ApiClient | None = None,
    kube_context: str | None = None,
) -> PyTorchJobResult:
    """Create ``job`` in ``namespace``, wait until it succeeds and return the result.

    The job's conditions are read every ``poll_interval_s`` seconds and each new state is logged. A failed job
    raises a ``ResumeNerError`` naming the failed replica, the operator's message and the last log lines of that
    replica's pod; so does a job not finished within ``timeout_s`` (it keeps running unless ``cleanup`` is
    ``"always"``). ``cleanup`` deletes the job and its pods ``"always"``, ``"on-success"`` or ``"never"``. The
    Kubernetes client is ``api_client``, else one for ``kube_context``, else the pod's service account inside a
    cluster, else the current kubeconfig context.
    """
    name = _check_submission(
        job,
        namespace=namespace,
        timeout_s=timeout_s,
        poll_interval_s=poll_interval_s,
        cleanup=cleanup,
        api_client=api_client,
        kube_context=kube_context,
    )
    # a given client stays open for its owner; one loaded here is closed
    client_context = contextlib.nullcontext(api_client) if api_client is not None else _load_api_client(kube_context)
    with client_context as client:
        return _create_and_wait(
            client,
            job,
            name=name,
            namespace=namespace,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
            cleanup=cleanup,
        )


def _create_and_wait(
    api_client: ApiClient,
    job: dict[str, Any],
    *,
    name: str,
    namespace: str,
    timeout_s: float,
    poll_interval_s: float,
    cleanup: str,
) -> PyTorchJobResult:
    """``submit_pytorchjob_and_wait`` with checked arguments and a client."""
    from kubernetes import client

    target = _Target(name, namespace, api_client.configuration.host)
    custom = client.CustomObjectsApi(api_client)
    started = time.monotonic()
    with _kube_call("creating", target):
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, job, _request_timeout=REQUEST_TIMEOUT_S
        )
    log.info("%s created at %s", target, target.host)
    current, final = _wait_for_final_condition(custom, target, started + timeout_s, poll_interval_s)
    seconds = time.monotonic() - started
    status = current.get("status") or {}
    if final is None:
        if cleanup == "always":
            _delete(custom, target)
        raise ResumeNerError(_timeout_message(target, timeout_s, _state(status.get("conditions") or []), cleanup))
    if final["type"] == "Failed":
        replica = _failed_replica(status, final.get("message") or "")
        tail = _log_tail(api_client, target, replica) if replica else None
        if cleanup == "always":
            _delete(custom, target)
        raise ResumeNerError(_failure_message(target, replica, final, tail, cleanup))
    log.info("%s succeeded in %.0f s", target, seconds)
    if cleanup != "never":
        _delete(custom, target)
    return PyTorchJobResult(
        name=name,
        namespace=namespace,
        state=final["type"],
        conditions=list(status.get("conditions") or []),
        failed_replica=None,
        message=final.get("message") or "",
        seconds=seconds,
    )


def _check_job_arguments(
    *,
    name: str,
    namespace: str,
    replicas: int,
    nproc_per_node: int | str,
    gpus_per_replica: int,
    gpus: int,
    args: list[str],
    elastic: tuple[int, int] | None,
    backoff_limit: int,
    clean_pod_policy: str,
    ttl_seconds_after_finished: int | None,
    env: dict[str, str],
) -> None:
    """Raise one ``ConfigError`` listing every invalid argument of ``build_pytorchjob``."""
    problems = []
    if not _is_int(replicas) or replicas < 1:
        problems.append(f"replicas {replicas!r}: must be an integer >= 1 (1 Master + replicas - 1 Workers)")
    problems += _name_problems(name, replicas)
    if not isinstance(namespace, str) or not _DNS1123_LABEL.fullmatch(namespace) or len(namespace) > MAX_NAME_LENGTH:
        problems.append(
            f"namespace {namespace!r}: must be a DNS-1123 label (lower-case letters, digits, '-'; at "
            f"most {MAX_NAME_LENGTH} characters)"
        )
    if not (_is_int(nproc_per_node) and nproc_per_node >= 1) and nproc_per_node not in NPROC_WORDS:
        problems.append(
            f"nproc_per_node {nproc_per_node!r}: must be an integer >= 1 or one of {', '.join(NPROC_WORDS)}"
        )
    if not _is_int(gpus_per_replica) or gpus_per_replica < 0:
        problems.append(f"gpus_per_replica {gpus_per_replica!r}: must be an integer >= 0")
    elif nproc_per_node == "gpu" and gpus == 0:
        problems.append(
            "nproc_per_node 'gpu' starts one process per GPU, but the pods get none (gpus_per_replica "
            "is 0 or pipeline.gpu is false); give GPUs or use an integer"
        )
    elif _is_int(nproc_per_node) and 0 < gpus < nproc_per_node:
        problems.append(
            f"nproc_per_node {nproc_per_node} exceeds gpus_per_replica {gpus}: each process needs its "
            "own GPU; lower nproc_per_node or use 'gpu'"
        )
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        problems.append(f"args {args!r}: must be a list of strings (the arguments of {TRAIN_ENTRYPOINT})")
    if elastic is not None:
        problems += _elastic_problems(elastic, replicas)
    if not _is_int(backoff_limit) or backoff_limit < 0:
        problems.append(f"backoff_limit {backoff_limit!r}: must be an integer >= 0")
    if clean_pod_policy not in CLEAN_POD_POLICIES:
        problems.append(f"clean_pod_policy {clean_pod_policy!r}: must be one of {', '.join(CLEAN_POD_POLICIES)}")
    if ttl_seconds_after_finished is not None and (
        not _is_int(ttl_seconds_after_finished) or ttl_seconds_after_finished < 0
    ):
        problems.append(f"ttl_seconds_after_finished {ttl_seconds_after_finished!r}: must be None or an integer >= 0")
    problems += _credential_problems(env, args if isinstance(args, list) else [])
    if problems:
        raise ConfigError("invalid PyTorchJob:\n  " + "\n  ".join(problems))


def _credential_problems(env: dict[str, str], args: list[Any]) -> list[str]:
    """Plain-text environment values and arguments of the job that carry credentials (shown redacted)."""
    found = [
        f"env {name}={redact_credentials(str(value))}" for name, value in env.items() if has_credentials(str(value))
    ]
    found += [f"argument {redact_credentials(str(arg))!r}" for arg in args if has_credentials(str(arg))]
    return [
        f"{what}: holds a credential, which the manifest would show in plain text; drop it from the URL and "
        "put it in the Secret of pipeline.mlflow_secret (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
        for what in found
    ]


def _name_problems(name: Any, replicas: Any) -> list[str]:
    """What is wrong with the job's name: the webhook wants a DNS-1035 label, and so do the pods' Service names."""
    if not isinstance(name, str) or not _DNS1035_LABEL.fullmatch(name):
        return [
            f"name {name!r}: must be a DNS-1035 label: lower-case letters, digits and '-', starting with a "
            "letter and ending with a letter or digit, e.g. resume-ner-final-train"
        ]
    last_pod = f"{name}-worker-{replicas - 2}" if _is_int(replicas) and replicas > 1 else f"{name}-master-0"
    if len(last_pod) > MAX_NAME_LENGTH:
        return [
            f"name {name!r}: too long; the operator names pods and Services <name>-<replica type>-<index> "
            f"({last_pod!r}), which must fit in {MAX_NAME_LENGTH} characters"
        ]
    return []


def _elastic_problems(elastic: Any, replicas: Any) -> list[str]:
    """What is wrong with ``elastic=(min, max)`` for a job of ``replicas`` nodes."""
    if not (isinstance(elastic, (tuple, list)) and len(elastic) == 2 and all(_is_int(n) for n in elastic)):
        return [f"elastic {elastic!r}: must be (min, max) node counts, e.g. (2, 4)"]
    low, high = elastic
    if not 1 <= low <= high:
        return [f"elastic {elastic!r}: needs 1 <= min <= max"]
    if _is_int(replicas) and not low <= replicas <= high:
        return [f"elastic {elastic!r}: replicas {replicas} must lie within min..max"]
    if _is_int(replicas) and replicas < 2:
        return ["elastic: the operator needs a Worker replica with an elastic policy; use replicas >= 2"]
    return []


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _pod_template(
    config: ResumeNerConfig, *, image: str, args: list[str], gpus: int, env: dict[str, str] | None
) -> dict[str, Any]:
    """The pod of one replica (``args``: the module torchrun runs, then its arguments); new dicts on every call,
    so no two replicas share an object."""
    settings = config.pipeline
    resources = settings.resources["final_train"]
    limits = {"cpu": resources.cpu_limit, "memory": resources.memory_limit}
    if gpus > 0:
        limits[settings.gpu_accelerator] = str(gpus)
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
    ]
    mounts = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": HOME},
    ]  # the root file system is read-only; caches go to $HOME
    if settings.volume_claim:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": settings.volume_claim}})
        mounts.append({"name": "data", "mountPath": settings.volume_mount_path})
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["torchrun"],
        "args": ["-m", *args],
        "env": _environment(config, env),
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": resources.cpu_request, "memory": resources.memory_request}, "limits": limits},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        # the training needs no Kubernetes API: an account of its own, without a token
        "serviceAccountName": settings.job_service_account,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if gpus > 0:
        pod_spec["nodeSelector"] = dict(settings.gpu_node_selector)
        pod_spec["tolerations"] = [dict(toleration) for toleration in settings.gpu_tolerations]
    return {"metadata": {"labels": dict(LABELS), "annotations": {"sidecar.istio.io/inject": "false"}}, "spec": pod_spec}


def _environment_values(config: ResumeNerConfig, extra: dict[str, str] | None) -> dict[str, str]:
    """The plain-text environment of the pods: the tracking URI given (``given_tracking_uri``, else the pipeline's
    default ``pipeline.mlflow_uri``), offline Hugging Face Hub, then ``extra``."""
    return {
        TRACKING_URI_ENV: given_tracking_uri(None, config.tracking) or config.pipeline.mlflow_uri,
        "HF_HUB_OFFLINE": "1",
        **(extra or {}),
    }


def _environment(config: ResumeNerConfig, extra: dict[str, str] | None) -> list[dict[str, Any]]:
    """``_environment_values``, and the MLflow credentials as Secret references."""
    values = _environment_values(config, extra)
    entries: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in values.items()]
    secret = config.pipeline.mlflow_secret
    if secret:
        entries += [
            {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key, variable in config.pipeline.mlflow_secret_env.items()
            if variable not in values
        ]
    return entries


class _NoAliasDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes repeated objects out in full instead of ``&id001`` / ``*id001``."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _check_submission(
    job: dict[str, Any],
    *,
    namespace: str,
    timeout_s: float,
    poll_interval_s: float,
    cleanup: str,
    api_client: ApiClient | None,
    kube_context: str | None,
) -> str:
    """The job's name, after one ``ConfigError`` listing every invalid argument of the submission."""
    problems = []
    metadata = job.get("metadata") if isinstance(job, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(job, dict) or job.get("apiVersion") != f"{GROUP}/{VERSION}" or job.get("kind") != KIND:
        problems.append(f"job: not a {GROUP}/{VERSION} {KIND} (build it with build_pytorchjob)")
    if not name:
        problems.append("job: metadata.name is missing")
    elif isinstance(metadata, dict) and metadata.get("namespace") not in (None, namespace):
        problems.append(f"job: metadata.namespace {metadata['namespace']!r} differs from namespace {namespace!r}")
    if cleanup not in CLEANUP_POLICIES:
        problems.append(f"cleanup {cleanup!r}: must be one of {', '.join(CLEANUP_POLICIES)}")
    if not timeout_s > 0:
        problems.append(f"timeout_s {timeout_s!r}: must be > 0")
    if not poll_interval_s > 0:
        problems.append(f"poll_interval_s {poll_interval_s!r}: must be > 0")
    if api_client is not None and kube_context is not None:
        problems.append("pass api_client or kube_context, not both")
    if problems:
        raise ConfigError("cannot submit the PyTorchJob:\n  " + "\n  ".join(problems))
    return str(name)


def _load_api_client(kube_context: str | None) -> ApiClient:
    """A Kubernetes ``ApiClient``: of ``kube_context``, else in-cluster, else of the current kubeconfig context."""
    from kubernetes import client
    from kubernetes import config as kube_config

    if kube_context is None:
        configuration = client.Configuration()
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException:
            pass
        else:
            return client.ApiClient(configuration)
    try:
        return kube_config.new_client_from_config(context=kube_context)
    except kube_config.ConfigException as error:
        where = f"kube context {kube_context!r}" if kube_context else "the current kube context"
        raise ConfigError(
            f"no Kubernetes credentials for {where}: {str(error).rstrip('.')}. Set $KUBECONFIG or "
            "fetch the cluster's credentials (e.g. az aks get-credentials), or run inside the "
            "cluster"
        ) from None


@contextlib.contextmanager
def _kube_call(action: str, target: _Target) -> Iterator[None]:
    """Run Kubernetes API calls whose failures become ``ResumeNerError``s naming the job, the action, the server."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError) as error:
        raise _api_error(error, action, target) from error


def _api_error(error: Exception, action: str, target: _Target) -> ResumeNerError:
    """A ``ResumeNerError`` for a failed request: unreachable server, conflict, RBAC, missing CRD, other answers."""
    from kubernetes.client.exceptions import ApiException

    what = f"{action} {target}"
    if not isinstance(error, ApiException) or not error.status:
        reason = getattr(error, "reason", None) or error
        return ResumeNerError(
            f"cannot reach the Kubernetes API server at {target.host} while {what}: {reason}. "
            "Check the kube context (--kube-context, $KUBECONFIG) and that the cluster is reachable"
        )
    detail = _status_message(error.body) or error.reason
    answer = f"the Kubernetes API server at {target.host} answered {error.status} {error.reason} while {what}"
    if error.status == 409 and action == "creating":
        return ResumeNerError(
            f"{target} already exists: delete it (kubectl delete pytorchjob {target.name} -n "
            f"{target.namespace}) or pick another name"
        )
    if error.status == 401:
        return ResumeNerError(
            f"{answer}: {detail}. The credentials were rejected; refresh them (e.g. az aks "
            "get-credentials) or check the kube context"
        )
    if error.status == 403:
        return ResumeNerError(
            f"{answer}: {detail}. RBAC: the ServiceAccount or user needs create, get and delete "
            f"on pytorchjobs.kubeflow.org (and list pods, get pods/log) in namespace "
            f"{target.namespace}"
        )
    if error.status == 404 and action == "creating":
        return ResumeNerError(
            f"{answer}: {detail}. Is the Kubeflow Training Operator installed (kubectl get crd "
            f"pytorchjobs.kubeflow.org) and does namespace {target.namespace} exist?"
        )
    return ResumeNerError(f"{answer}: {detail}")


def _status_message(body: Any) -> str | None:
    """The ``message`` of a Kubernetes ``Status`` answer, if the body is one."""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return None
    return status.get("message") if isinstance(status, dict) else None


def _wait_for_final_condition(
    custom: CustomObjectsApi, target: _Target, deadline: float, poll_interval_s: float
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The job and its true Succeeded/Failed condition, polled until one exists; the condition is None at the deadline.

    Up to ``MAX_POLL_FAILURES`` consecutive unreachable-server, 429 or 5xx answers are retried: the job runs on
    while the API server restarts.
    """
    import urllib3
    from kubernetes.client.exceptions import ApiException

    current: dict[str, Any] = {}
    shown: tuple[str, str] | None = None
    failures = 0
    while True:
        try:
            current = custom.get_namespaced_custom_object(
                GROUP, VERSION, target.namespace, PLURAL, target.name, _request_timeout=REQUEST_TIMEOUT_S
            )
            failures = 0
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            failures += 1
            if not _transient(error) or failures >= MAX_POLL_FAILURES:
                raise _api_error(error, "reading", target) from error
            log.warning("%s: reading its status failed (%s); retrying", target, getattr(error, "reason", error))
        else:
            status = current.get("status") or {}
            conditions = status.get("conditions") or []
            progress = (_state(conditions), _replica_summary(status))
            if progress != shown:
                log.info("%s: %s%s", target, progress[0], f" ({progress[1]})" if progress[1] else "")
                shown = progress
            final = _final_condition(conditions)
            if final is not None:
                return current, final
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return current, None
        time.sleep(min(poll_interval_s, remaining))


def _transient(error: Exception) -> bool:
    """Worth another try: no answer at all, 429 Too Many Requests or a 5xx."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(error, ApiException):
        return error.status == 429 or error.status >= 500
    return True


def _state(conditions: list[dict[str, Any]]) -> str:
    """The type of the latest true condition (Created, Running, Restarting, Succeeded, Failed), else Submitted."""
    true = [condition["type"] for condition in conditions if condition.get("status") == "True"]
    return true[-1] if true else "Submitted"


def _final_condition(conditions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest true Succeeded or Failed condition, if any."""
    final = [c for c in conditions if c.get("type") in FINAL_STATES and c.get("status") == "True"]
    return final[-1] if final else None


def _replica_summary(status: dict[str, Any]) -> str:
    """``Master: 1 active; Worker: 1 failed`` from ``status.replicaStatuses``."""
    parts = []
    for replica_type, counts in sorted((status.get("replicaStatuses") or {}).items()):
        numbers = ", ".join(
            f"{(counts or {})[key]} {key}" for key in ("active", "succeeded", "failed") if (counts or {}).get(key)
        )
        if numbers:
            parts.append(f"{replica_type}: {numbers}")
    return "; ".join(parts)


def _failed_replica(status: dict[str, Any], message: str) -> str | None:
    """The replica type with failed pods, else the one the operator's message names."""
    failed = [
        replica_type
        for replica_type, counts in sorted((status.get("replicaStatuses") or {}).items())
        if (counts or {}).get("failed", 0) > 0
    ]
    if failed:
        return failed[0]
    named = re.search(r"\b(Master|Worker)\b", message)
    return named.group(1) if named else None


def _log_tail(api_client: ApiClient, target: _Target, replica: str) -> tuple[str, str] | None:
    """(pod name, last ``LOG_TAIL_LINES`` log lines) of a failed pod of ``replica``; None when none can be read."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    selector = f"{JOB_NAME_LABEL}={target.name},{REPLICA_TYPE_LABEL}={replica.lower()}"
    try:
        pods = core.list_namespaced_pod(
            target.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_S
        ).items
        if not pods:
            return None
        pod = next((p for p in pods if p.status is not None and p.status.phase == "Failed"), pods[0])
        text = core.read_namespaced_pod_log(
            pod.metadata.name,
            target.namespace,
            container=CONTAINER_NAME,
            tail_lines=LOG_TAIL_LINES,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except (ApiException, urllib3.exceptions.HTTPError) as error:
        log.warning("%s: cannot read the log of replica %s: %s", target, replica, getattr(error, "reason", error))
        return None
    return pod.metadata.name, str(text)


def _delete(custom: CustomObjectsApi, target: _Target) -> None:
    """Delete the job and, through their owner references, its pods and Services (a failure is only logged)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        custom.delete_namespaced_custom_object(
            GROUP,
            VERSION,
            target.namespace,
            PLURAL,
            target.name,
            propagation_policy="Background",
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except (ApiException, urllib3.exceptions.HTTPError) as error:
        log.warning("%s", _api_error(error, "deleting", target))
        return
    log.info("%s deleted", target)


def _failure_message(
    target: _Target, replica: str | None, condition: dict[str, Any], tail: tuple[str, str] | None, cleanup: str
) -> str:
    message = condition.get("message") or condition.get("reason") or "no message"
    lines = [f"{target} failed" + (f": replica {replica} failed" if replica else "") + f": {message}"]
    if tail is not None:
        pod, text = tail
        lines.append(f"last {LOG_TAIL_LINES} log lines of pod {pod}:")
        lines += [f"  {line}" for line in text.rstrip().splitlines()]
    if cleanup != "always":
        lines.append(
            f"inspect it: kubectl describe pytorchjob {target.name} -n {target.namespace}; kubectl logs -n "
            f"{target.namespace} -l {JOB_NAME_LABEL}={target.name} --prefix --tail=-1"
        )
    return "\n".join(lines)


def _timeout_message(target: _Target, timeout_s: float, state: str, cleanup: str) -> str:
    what = f"{target} did not finish within {timeout_s:g} s (last state: {state})"
    if cleanup == "always":
        return f"{what}; it was deleted"
    return (
        f"{what}; it keeps running: follow it with `kubectl get pytorchjob {target.name} -n {target.namespace} "
        f"-w`, stop it with `kubectl delete pytorchjob {target.name} -n {target.namespace}`"
    )
