"""The KServe ``InferenceService`` that serves a registered model version: build it, render it, find its storage URI.

``build_inference_service(config, name=..., storage_uri=..., namespace=...)`` returns a ``serving.kserve.io/v1beta1``
InferenceService as a plain, JSON-able dict; ``render_inference_service_yaml`` is it as YAML for ``kubectl apply -f
-``; ``storage_uri_of`` turns a version's artifact location into the URI KServe downloads. Written for KServe 0.14
and 0.15 and checked against the v0.15.2 release (its CRD, controller and webhooks;
``tests/unit/k8s/test_inferenceservice.py`` cites each rule).

KServe runs an MLflow model in one of two ways; ``runtime`` picks one:

- ``"custom"`` (the default), a custom predictor: the container ``kserve-container`` runs the project image with
  ``python3 -m mlflow models serve --model-uri /mnt/models --env-manager local --host 0.0.0.0 --port 8080`` (the
  command ``resume-ner serve`` runs). Its ``STORAGE_URI`` variable makes KServe add its storage initializer, an init
  container that downloads the URI into an emptyDir mounted at ``/mnt/models`` before the server starts. The image
  holds ``resume-ner`` and everything the model imports, at the versions of ``requirements.lock``: nothing is
  installed at start, no package index is reached, and the server is MLflow's own (``/ping``, ``/invocations`` with
  ``{"dataframe_records": [{"text": ...}]}``), as ``resume-ner serve`` and the tests run it.
- ``"mlserver"``: ``predictor.model`` with ``modelFormat: {name: mlflow}`` and ``protocolVersion: v2``, run by a
  ServingRuntime (default KServe's ``kserve-mlserver``) behind the Open Inference Protocol. KServe's own runtime
  cannot load this model: its image (``seldonio/mlserver:1.5.0`` in v0.15.2) installs nothing at start (MLServer
  takes extra packages only as a conda-pack tarball), has neither ``resume-ner`` nor torch or transformers, and
  lists MLflow model formats 1 and 2 while the model is saved by MLflow 3. Use it with ``serving_runtime``, a
  ServingRuntime of your own on an MLServer image that has ``resume-ner`` installed.

The pod is locked down on the container (Knative, which runs a ``Serverless`` service, refuses a pod-level security
context by default): user 10001 of the image, no privilege escalation, all capabilities dropped, the
``RuntimeDefault`` seccomp profile, a read-only root file system with emptyDirs at ``/tmp`` and ``$HOME``, CPU and
memory requests and limits, startup, readiness and liveness probes on port 8080, ``HF_HUB_OFFLINE=1`` (the MLServer
form keeps its image's own non-root user and a writable root, which MLServer may need). It runs as the
service account ``service_account`` without an API token; KServe's storage initializer takes the storage credentials
from the Secrets that account lists, never from this manifest, and a credential in ``storage_uri`` is refused.
``deployment_mode`` defaults to ``RawDeployment`` (a Deployment, Service and HPA: no Knative or Istio needed, and no
scale to zero for a model that takes a while to load).
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard
from urllib.parse import urlparse

from resume_ner.config import ResumeNerConfig, resolve_image
from resume_ner.errors import ConfigError
from resume_ner.gpu_nodes import cpu_millicores, memory_mebibytes
from resume_ner.k8s.pytorchjob import HOME, RUN_AS_USER, render_pytorchjob_yaml
from resume_ner.layout import TRACKING_URI_ENV
from resume_ner.redaction import has_credentials, redact_credentials
from resume_ner.serving.local_server import SERVER_WORKERS, serve_command
from resume_ner.tracking.mlflow import given_tracking_uri

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
KIND = "InferenceService"
KSERVE_RELEASE = "v0.15.2"  # the release whose CRD, controller and webhooks this module follows
CONTAINER_NAME = "kserve-container"  # the predictor container KServe gives the model to
PORT = 8080  # where KServe and Knative send requests to the predictor container
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts the files of the storage URI
STORAGE_URI_ENV = "STORAGE_URI"  # on a custom container: the URI the storage initializer downloads
HEALTH_PATH = "/ping"  # MLflow's scoring server: 200 once the model is loaded
RUNTIMES = ("custom", "mlserver")
DEPLOYMENT_MODES = ("RawDeployment", "Serverless")
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MLSERVER_RUNTIME = "kserve-mlserver"
DEFAULT_NAME = "resume-ner"
DEFAULT_NAMESPACE = "resume-ner-serving"
DEFAULT_SERVICE_ACCOUNT = "resume-ner-serving"
LABELS = {"app.kubernetes.io/name": "resume-ner", "app.kubernetes.io/component": "serving"}
# <name>-predictor-00001 (Knative's first revision) and isvc.<name>-predictor (the raw Deployment's app label) must
# fit a 63-character label
MAX_NAME_LENGTH = 47
MAX_LABEL_LENGTH = 63
# What KServe's default storage initializer downloads as a directory (storage.py, v0.15.2)
STORAGE_PREFIXES = ("s3://", "gs://", "pvc://", "hdfs://", "webhdfs://")
AZURE_STORAGE = (
    re.compile(r"^https://[^/]+\.blob\.core\.windows\.net/[^/]+"),
    re.compile(r"^https://[^/]+\.z[0-9]{1,2}\.blob\.storage\.azure\.net/[^/]+"),
    re.compile(r"^https://[^/]+\.file\.core\.windows\.net/[^/]+"),
    re.compile(r"^https://[^/]+\.z[0-9]{1,2}\.file\.storage\.azure\.net/[^/]+"),
)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")  # any other http(s) URL: one file, not a model directory
_WASBS = re.compile(r"^wasbs?://(?P<container>[^@/]+)@(?P<account>[^./@]+)\.blob\.core\.windows\.net(?P<path>/.*)?$")
_SCHEME = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.\-]*):", re.IGNORECASE)
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def build_inference_service(
    config: ResumeNerConfig,
    *,
    name: str = DEFAULT_NAME,
    storage_uri: str,
    namespace: str = DEFAULT_NAMESPACE,
    runtime: str = "custom",
    image: str | None = None,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
    deployment_mode: str = "RawDeployment",
    min_replicas: int = 1,
    max_replicas: int = 3,
    workers: int = SERVER_WORKERS,
    cpu_request: str = "1",
    cpu_limit: str = "2",
    memory_request: str = "3Gi",
    memory_limit: str = "6Gi",
    serving_runtime: str = MLSERVER_RUNTIME,
    mlflow_secret: str | None = None,
) -> dict[str, Any]:
    """A ``serving.kserve.io/v1beta1`` InferenceService of the MLflow model at ``storage_uri``, as a plain dict.

    ``runtime="custom"``: the project image (``image``, default ``$RESUME_NER_IMAGE``, else ``pipeline.image``)
    serves it with ``mlflow models serve`` and ``workers`` worker processes; ``runtime="mlserver"``: the
    ServingRuntime ``serving_runtime`` does (see the module's docstring for why that needs a runtime of your own).
    ``storage_uri`` is a URI KServe's storage initializer downloads (``storage_uri_of`` makes one of a version's
    artifact location). ``mlflow_secret`` (default none: the server reads only ``/mnt/models``) adds the tracking
    URI and the Secret's keys of ``pipeline.mlflow_secret_env`` as ``secretKeyRef``s. Every invalid argument is
    reported at once in a ``ConfigError``, a credential in ``storage_uri`` or the tracking URI among them.
    """
    environment = _plain_environment(config, mlflow_secret)
    _check_arguments(
        name=name,
        storage_uri=storage_uri,
        namespace=namespace,
        runtime=runtime,
        image=image,
        service_account=service_account,
        deployment_mode=deployment_mode,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        workers=workers,
        resources=(cpu_request, cpu_limit, memory_request, memory_limit),
        serving_runtime=serving_runtime,
        mlflow_secret=mlflow_secret,
        environment=environment,
    )
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in environment.items()]
    if mlflow_secret:
        env += [
            {"name": variable, "valueFrom": {"secretKeyRef": {"name": mlflow_secret, "key": key, "optional": True}}}
            for key, variable in config.pipeline.mlflow_secret_env.items()
        ]
    resources = {
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        # serving calls no Kubernetes API: the account only carries the storage credentials' Secrets
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
    }
    if runtime == "custom":
        image = image or resolve_image(config)
        predictor.update(_custom_predictor(image, storage_uri, env=env, resources=resources, workers=workers))
    else:
        predictor["model"] = _mlserver_model(serving_runtime, storage_uri, env=env, resources=resources)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(LABELS),
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: deployment_mode},
        },
        "spec": {"predictor": predictor},
    }


def render_inference_service_yaml(service: dict[str, Any]) -> str:
    """``service`` as a YAML document, keys in manifest order, without anchors or aliases."""
    return render_pytorchjob_yaml(service)


def storage_uri_of(artifact_uri: str, *, artifacts_destination: str | None = None) -> str:
    """The URI KServe's storage initializer downloads for a model version's artifact location ``artifact_uri``.

    ``artifact_uri`` is where the version's source (``runs:/RUN_ID/mlflow_model``) is stored, as the tracking
    server resolves it: ``RunsArtifactRepository.get_underlying_uri(version.source)`` of
    ``mlflow.store.artifact.runs_artifact_repo`` (MLflow 3's ``get_model_version_download_uri`` answers the
    ``runs:/`` source itself); or a storage URI. One KServe downloads as a directory (``s3://``, ``gs://``,
    ``pvc://``, ``hdfs://``, ``webhdfs://``, Azure Blob or Files ``https://``) or an http(s) archive is returned as
    is; MLflow's form of an Azure Blob location, ``wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PATH``, becomes
    ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH``; ``mlflow-artifacts:/PATH``, an artifact a tracking
    server proxies, is PATH under the server's ``artifacts_destination``. Anything else (``runs:/`` and ``models:/``
    need the tracking server to resolve; a path is on some other machine) and a URI with a credential raise
    ``ConfigError``.
    """
    uri = artifact_uri.strip()
    scheme = _SCHEME.match(uri)
    if scheme and scheme["scheme"].lower() == "mlflow-artifacts":
        if not artifacts_destination:
            raise ConfigError(
                f"{redact_credentials(uri)}: an artifact the MLflow tracking server proxies; give the server's "
                "--artifacts-destination (the key artifacts-destination of the Secret resume-ner-mlflow-backend) "
                "to name where it is stored, or the storage URI itself"
            )
        return storage_uri_of(f"{artifacts_destination.strip().rstrip('/')}/{urlparse(uri).path.lstrip('/')}")
    wasbs = _WASBS.match(uri)
    if wasbs:
        uri = f"https://{wasbs['account']}.blob.core.windows.net/{wasbs['container']}{wasbs['path'] or ''}"
    problems = storage_uri_problems(uri)
    if problems:
        raise ConfigError("\n".join(problems))
    return uri


def storage_uri_problems(uri: str) -> list[str]:
    """What keeps KServe's default storage initializer from downloading ``uri`` as a model directory, and a
    credential in it (shown redacted); empty when it is fine."""
    if not isinstance(uri, str) or not uri.strip():
        return [f"storage URI {uri!r}: must name the registered version's MLflow model, e.g. s3://BUCKET/PATH"]
    shown = f"storage URI {redact_credentials(uri)!r}"
    if _WASBS.match(uri):
        return [
            f"{shown}: MLflow's form of an Azure Blob location; KServe reads "
            "https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH (storage_uri_of converts it)"
        ]
    if has_credentials(uri):
        return [
            f"{shown}: holds a credential, which the manifest would show in plain text; drop it and list a Secret "
            "with the storage credentials in the service account (KServe's storage initializer reads them there)"
        ]
    scheme = _SCHEME.match(uri)
    lowered = uri.lower()
    if scheme and scheme["scheme"].lower() in ("runs", "models", "mlflow-artifacts"):
        return [
            f"{shown}: an MLflow URI, which only the tracking server resolves; give where the server stores it, "
            "RunsArtifactRepository.get_underlying_uri(SOURCE) of mlflow.store.artifact.runs_artifact_repo "
            "(manifests/README.md, Serving)"
        ]
    if lowered.startswith(STORAGE_PREFIXES) or any(pattern.match(uri) for pattern in AZURE_STORAGE):
        return []
    if lowered.startswith(("http://", "https://")):
        if urlparse(uri).path.lower().endswith(ARCHIVE_SUFFIXES):
            return []
        return [
            f"{shown}: KServe downloads a plain http(s) URL as one file; give the model directory in object storage "
            f"(s3://, gs://, Azure Blob https://) or an archive of it ({', '.join(ARCHIVE_SUFFIXES)})"
        ]
    if lowered.startswith("wasb"):
        return [f"{shown}: expected wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PATH"]
    return [
        f"{shown}: not a location KServe's storage initializer downloads; use {', '.join(STORAGE_PREFIXES)}, "
        "Azure Blob or Files https://, or an http(s) archive (a path is on this machine: upload the model or put "
        "it on a PersistentVolumeClaim, pvc://CLAIM/PATH)"
    ]


def _custom_predictor(
    image: str, storage_uri: str, *, env: list[dict[str, Any]], resources: dict[str, Any], workers: int
) -> dict[str, Any]:
    """The predictor's pod fields of the custom form: the serving container and its writable volumes."""
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        # serve_command's arguments after its interpreter: the image's python3, whose bin/ is first on PATH
        "command": ["python3"],
        "args": serve_command(MODEL_DIR, host="0.0.0.0", port=PORT, workers=workers)[1:],
        # KServe downloads STORAGE_URI to /mnt/models in an init container, and sets the variable to that path
        "env": [{"name": STORAGE_URI_ENV, "value": storage_uri}, *env],
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],  # Knative: http1 or h2c
        # the model loads before /ping answers: the startup probe gives it 5 minutes, then liveness takes over
        "startupProbe": _probe(HEALTH_PATH, period_s=5, timeout_s=5, failures=60),
        "readinessProbe": _probe(HEALTH_PATH, period_s=10, timeout_s=5, failures=3),
        "livenessProbe": _probe(HEALTH_PATH, period_s=30, timeout_s=10, failures=5),
        "resources": resources,
        "securityContext": _security_context(run_as_user=RUN_AS_USER, read_only_root=True),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": HOME}],
    }
    volumes = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "home", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    return {"containers": [container], "volumes": volumes}


def _mlserver_model(
    serving_runtime: str, storage_uri: str, *, env: list[dict[str, Any]], resources: dict[str, Any]
) -> dict[str, Any]:
    """``predictor.model`` of the MLServer form; the runtime's image brings the command and its own user."""
    return {
        "modelFormat": {"name": "mlflow"},
        "protocolVersion": "v2",
        "runtime": serving_runtime,
        "storageUri": storage_uri,
        "env": env,
        "readinessProbe": _probe("/v2/health/ready", period_s=10, timeout_s=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period_s=30, timeout_s=10, failures=5),
        "resources": resources,
        # MLServer's writes are not known here: a writable root file system
        "securityContext": _security_context(run_as_user=None, read_only_root=False),
    }


def _probe(path: str, *, period_s: int, timeout_s: int, failures: int) -> dict[str, Any]:
    """An HTTP GET probe on the model server's port; every threshold explicit (Knative requires them >= 1)."""
    return {
        "httpGet": {"path": path, "port": PORT},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _security_context(*, run_as_user: int | None, read_only_root: bool) -> dict[str, Any]:
    """The container's security context (a pod-level one Knative refuses by default)."""
    context: dict[str, Any] = {"runAsNonRoot": True}
    if run_as_user is not None:
        context.update(runAsUser=run_as_user, runAsGroup=run_as_user)
    context.update(
        allowPrivilegeEscalation=False,
        privileged=False,
        readOnlyRootFilesystem=read_only_root,
        capabilities={"drop": ["ALL"]},
        seccompProfile={"type": "RuntimeDefault"},
    )
    return context


def _plain_environment(config: ResumeNerConfig, mlflow_secret: str | None) -> dict[str, str]:
    """The container's plain-text environment: offline Hugging Face Hub, and the tracking URI with ``mlflow_secret``
    (the one given, else ``pipeline.mlflow_uri``)."""
    environment = {"HF_HUB_OFFLINE": "1"}
    if mlflow_secret:
        environment[TRACKING_URI_ENV] = given_tracking_uri(None, config.tracking) or config.pipeline.mlflow_uri
    return environment


def _check_arguments(
    *,
    name: Any,
    storage_uri: Any,
    namespace: Any,
    runtime: Any,
    image: Any,
    service_account: Any,
    deployment_mode: Any,
    min_replicas: Any,
    max_replicas: Any,
    workers: Any,
    resources: tuple[Any, Any, Any, Any],
    serving_runtime: Any,
    mlflow_secret: Any,
    environment: dict[str, str],
) -> None:
    """Raise one ``ConfigError`` listing every invalid argument of ``build_inference_service``."""
    problems = []
    if not isinstance(name, str) or not _DNS1035_LABEL.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        problems.append(
            f"name {name!r}: must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters (lower-case letters, "
            "digits and '-', starting with a letter): KServe names the predictor <name>-predictor"
        )
    problems += storage_uri_problems(storage_uri)
    for what, value in (("namespace", namespace), ("service_account", service_account)):
        if not _is_name(value, _DNS1123_LABEL if what == "namespace" else _DNS1123_SUBDOMAIN):
            problems.append(f"{what} {value!r}: must be a DNS-1123 name (lower-case letters, digits, '-')")
    if runtime not in RUNTIMES:
        problems.append(f"runtime {runtime!r}: must be one of {', '.join(RUNTIMES)}")
    elif runtime == "mlserver" and not _is_name(serving_runtime, _DNS1123_SUBDOMAIN):
        problems.append(f"serving_runtime {serving_runtime!r}: must name a ServingRuntime (a DNS-1123 name)")
    if image is not None and (not isinstance(image, str) or not image.strip() or image != image.strip()):
        problems.append(f"image {image!r}: must be an image reference, e.g. myacr.azurecr.io/resume-ner:0.1.0")
    if deployment_mode not in DEPLOYMENT_MODES:
        problems.append(f"deployment_mode {deployment_mode!r}: must be one of {', '.join(DEPLOYMENT_MODES)}")
    lowest = 0 if deployment_mode == "Serverless" else 1  # only Knative scales to zero
    if not _is_int(min_replicas) or min_replicas < lowest:
        problems.append(f"min_replicas {min_replicas!r}: must be an integer >= {lowest} in {deployment_mode}")
    if not _is_int(max_replicas) or max_replicas < max(1, min_replicas if _is_int(min_replicas) else 1):
        problems.append(f"max_replicas {max_replicas!r}: must be an integer >= 1 and >= min_replicas")
    if not _is_int(workers) or workers < 1:
        problems.append(f"workers {workers!r}: must be an integer >= 1 (server processes, each with the model)")
    problems += _resource_problems(*resources)
    if mlflow_secret is not None and not _is_name(mlflow_secret, _DNS1123_SUBDOMAIN):
        problems.append(f"mlflow_secret {mlflow_secret!r}: must name a Secret (a DNS-1123 name)")
    problems += [
        f"env {key}={redact_credentials(value)}: holds a credential, which the manifest would show in plain text; "
        "drop it from the URL and put it in the Secret of mlflow_secret"
        for key, value in environment.items()
        if has_credentials(value)
    ]
    if problems:
        raise ConfigError("invalid InferenceService:\n  " + "\n  ".join(problems))


def _resource_problems(cpu_request: Any, cpu_limit: Any, memory_request: Any, memory_limit: Any) -> list[str]:
    """What is wrong with the container's CPU and memory requests and limits."""
    problems = []
    for kind, parse, request, limit in (
        ("cpu", cpu_millicores, cpu_request, cpu_limit),
        ("memory", memory_mebibytes, memory_request, memory_limit),
    ):
        try:
            if parse(request) > parse(limit):
                problems.append(f"{kind} request {request} exceeds its limit {limit}")
        except (TypeError, ValueError) as error:
            problems.append(f"{kind}: {error}")
    return problems


def _is_name(value: object, pattern: re.Pattern[str]) -> bool:
    return isinstance(value, str) and bool(pattern.fullmatch(value)) and len(value) <= MAX_LABEL_LENGTH


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
