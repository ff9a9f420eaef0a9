"""The KServe InferenceService of a registered version: the manifest passes the strict schema of KServe's CRD and
webhook (support/inferenceservice_schema.py) and the strict Kubernetes core/v1 schema, serves the MLflow model with
the project image the way KServe runs a custom predictor, is locked down and carries no credential; ``storage_uri_of``
maps artifact locations to what KServe downloads; ``resume-ner k8s inferenceservice render`` prints such a manifest,
and manifests/serving/inferenceservice.yaml is what it prints.

Each rule of KServe a test relies on cites the file it comes from in github.com/kserve/kserve at tag v0.15.2 ("KServe
v0.15.2 <path>:<lines>"); Knative's, in github.com/knative/serving at knative-v1.17.2, the release of the
knative.dev/serving v0.44 module that KServe v0.15.2 builds with (its go.mod).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from support.inferenceservice_schema import KSERVE_COMMIT, KSERVE_TAG, SCHEMA, assert_valid, schema_from_crd

from resume_ner.cli import k8s_commands
from resume_ner.cli.main import common_parent
from resume_ner.config import load
from resume_ner.errors import ConfigError
from resume_ner.k8s.pytorchjob import HOME, RUN_AS_USER
from resume_ner.k8s.serving import build_inference_service, storage_uri_of
from resume_ner.serving.local_server import serve_command

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "manifests" / "serving" / "inferenceservice.yaml"
EXAMPLE_STORAGE_URI = "https://REPLACE_ME.blob.core.windows.net/REPLACE_ME/mlflow/EXPERIMENT_ID/RUN_ID/artifacts/mlflow_model"
STORAGE_URI = "s3://models/mlflow/1/0123456789abcdef/artifacts/mlflow_model"
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@pytest.fixture(autouse=True)
def _no_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("RESUME_NER_IMAGE", "MLFLOW_TRACKING_URI", "RESUME_NER_CONFIG_DIR"):
        monkeypatch.delenv(variable, raising=False)


def _service(config=None, **kwargs: Any) -> dict[str, Any]:
    return build_inference_service(config or load(), **({"storage_uri": STORAGE_URI} | kwargs))


def _predictor(service: dict[str, Any]) -> dict[str, Any]:
    return service["spec"]["predictor"]


def _container(service: dict[str, Any]) -> dict[str, Any]:
    (container,) = _predictor(service)["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container["env"]}


# ---------------------------------------------------------------------------------------------------------------
# The schema


def test_the_schema_is_derived_from_the_recorded_kserve_release():
    assert KSERVE_TAG == "v0.15.2" and KSERVE_TAG in SCHEMA["title"] and KSERVE_COMMIT in SCHEMA["description"]
    predictor = SCHEMA["$defs"]["PredictorSpec"]
    assert predictor["additionalProperties"] is False
    assert {"containers", "volumes", "model", "minReplicas", "serviceAccountName"} <= set(predictor["properties"])
    assert not {"sklearn", "huggingface", "workerSpec"} & set(predictor["properties"])  # pruned: refused


def test_schema_from_crd_keeps_the_crds_rules_strictly_and_prunes_what_is_not_rendered():
    container = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "port": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                              "x-kubernetes-int-or-string": True}}}
    predictor = {"type": "object", "properties": {
        "minReplicas": {"type": "integer", "format": "int32"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "containers": {"type": "array", "items": container},
        "initContainers": {"type": "array", "items": container},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        **{field: {"type": "object"} for field in ("sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx",
                                                   "pmml", "lightgbm", "paddle", "huggingface", "workerSpec")}}}
    crd = {"spec": {"versions": [{"name": "v1beta1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"predictor": predictor}}}}}}]}}
    schema = schema_from_crd(crd, tag="vX", commit="c0ffee")
    derived = schema["$defs"]["PredictorSpec"]
    assert set(derived["properties"]) == {"minReplicas", "labels", "containers", "initContainers", "free"}
    assert derived["properties"]["minReplicas"] == {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
    assert derived["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in derived["properties"]["free"]
    validator = jsonschema.Draft202012Validator(schema)
    service = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "a"},
               "spec": {"predictor": {"containers": [{"name": "kserve-container", "port": 8080}]}}}
    assert validator.is_valid(service)
    for bad in ({"containers": [{"name": "kserve-container", "other": 1}]}, {"minReplicas": 2**31},
                {"containers": [{"name": "x"}], "sklearn": {}}, {"containers": [{"port": 1}]}):
        assert not validator.is_valid({**service, "spec": {"predictor": bad}}), bad


def test_schema_is_strict_and_refuses_what_kserve_refuses():
    service = _service()
    assert_valid(service)
    predictor, container = _predictor(service), _container(service)
    bad = {
        "unknown predictor field": {"predictor": {**predictor, "replicas": 2}},
        "unknown container field": {"predictor": {**predictor, "containers": [{**container, "colour": "blue"}]}},
        "bad type": {"predictor": {**predictor, "minReplicas": "1"}},
        "bad quantity": {"predictor": {**predictor, "containers": [
            {**container, "resources": {"limits": {"cpu": "two"}}}]}},
        "missing predictor": {},
        "a framework shorthand (pruned)": {"predictor": {**predictor, "sklearn": {"storageUri": STORAGE_URI}}},
        # KServe v0.15.2 pkg/apis/serving/v1beta1/predictor.go:124-152 and component.go:386-391: exactly one
        # implementation, and a container named kserve-container is one
        "two implementations": {"predictor": {**predictor, "model": {"modelFormat": {"name": "mlflow"}}}},
        "no implementation": {"predictor": {"minReplicas": 1}},
        # predictor_custom.go:51-63: the first container's PROTOCOL is v1 or v2
        "bad PROTOCOL": {"predictor": {**predictor, "containers": [
            {**container, "env": [*container["env"], {"name": "PROTOCOL", "value": "v3"}]}]}},
        # inference_service_validation.go:432-444: no storage URI on a collocated transformer
        "STORAGE_URI on the transformer": {"predictor": {**predictor, "containers": [container, {
            "name": "transformer-container", "image": "t:1", "env": [{"name": "STORAGE_URI", "value": "s3://x"}]}]}},
    }
    for what, spec in bad.items():
        assert not VALIDATOR.is_valid({**service, "spec": spec}), what
    # inference_service_validation.go:43-51, 233-238: the name is IsvcNameFmt, [a-z]([-a-z0-9]*[a-z0-9])?
    assert not VALIDATOR.is_valid({**service, "metadata": {**service["metadata"], "name": "1-champion"}})
    assert not VALIDATOR.is_valid({**service, "apiVersion": "serving.kserve.io/v1alpha1"})
    assert not VALIDATOR.is_valid({**service, "status": {}})
    with pytest.raises(jsonschema.ValidationError):
        assert_valid({**service, "spec": {}})


# ---------------------------------------------------------------------------------------------------------------
# The custom predictor: KServe's rules it relies on


def test_the_model_server_is_the_predictor_container_kserve_gives_the_storage_uri_to():
    service = _service()
    container = _container(service)
    # KServe v0.15.2 pkg/constants/constants.go:359 InferenceServiceContainerName = "kserve-container";
    # pkg/apis/serving/v1beta1/predictor_custom.go:75-88 reads the storage URI of a custom predictor from the
    # STORAGE_URI variable (constants.go:264) of that container only
    assert container["name"] == "kserve-container"
    assert _env(container)["STORAGE_URI"] == {"name": "STORAGE_URI", "value": STORAGE_URI}
    # pkg/controller/v1beta1/inferenceservice/components/predictor.go:259-270 turns it into the pod annotation
    # internal.serving.kserve.io/storage-initializer-sourceuri, after utils/utils.go:346-377 accepted its form
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"


def test_the_server_reads_the_model_where_the_storage_initializer_puts_it():
    container = _container(_service(workers=2))
    # KServe v0.15.2 pkg/constants/constants.go:370-371 DefaultModelLocalMountPath = "/mnt/models", and
    # pkg/webhook/admission/pod/storage_initializer_injector.go:376-412: the storage-initializer init container
    # downloads the URI into an emptyDir at /mnt/models, which the kserve-container mounts there (read-only by
    # default), and STORAGE_URI becomes /mnt/models
    args = container["args"]
    assert args[args.index("--model-uri") + 1] == "/mnt/models"
    assert not [m for m in container["volumeMounts"] if m["mountPath"].startswith("/mnt/models")]  # KServe's mount
    # the command resume-ner serve runs, in the image's Python: the local environment, nothing installed at start
    assert container["command"] == ["python3"]
    assert args == serve_command("/mnt/models", host="0.0.0.0", port=8080, workers=2)[1:]
    assert args[:4] == ["-m", "mlflow", "models", "serve"] and args[args.index("--env-manager") + 1] == "local"


def test_the_server_listens_on_the_port_kserve_and_knative_send_requests_to():
    container = _container(_service())
    args = container["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    # KServe v0.15.2 pkg/constants/constants.go:320 InferenceServiceDefaultHttpPort = "8080";
    # pkg/controller/v1beta1/inferenceservice/reconcilers/service/service_reconciler.go:123-163: the raw Service
    # sends port 80 to the first containerPort (8080 when none is declared)
    assert args[args.index("--port") + 1] == "8080"
    # Knative knative-v1.17.2 pkg/apis/serving/k8s_validation.go:477-495 (user port, default 8080) and 715-742:
    # one TCP port, named "", http1 or h2c
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": 8080}  # MLflow's scoring server


def test_the_pod_is_locked_down_on_the_container_with_probes_resources_and_writable_tmp():
    service = _service()
    predictor, container = _predictor(service), _container(service)
    security = container["securityContext"]
    assert security == {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                        "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert RUN_AS_USER == 10001  # images/Dockerfile: USER 10001
    # Knative knative-v1.17.2 pkg/apis/serving/fieldmask.go:690-721 keeps these container fields; a pod-level
    # security context is refused while kubernetes.podspec-securitycontext is off (fieldmask.go:646-668,
    # pkg/apis/config/features.go:91), so there is none, and no init container of ours (features.go:106)
    assert set(security) <= {"capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "runAsNonRoot",
                             "allowPrivilegeEscalation", "seccompProfile", "privileged"}
    assert "securityContext" not in predictor and "initContainers" not in predictor
    assert predictor["serviceAccountName"] == "resume-ner-serving"
    assert predictor["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in predictor["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    assert set(mounts) == {"/tmp", HOME} and all("emptyDir" in volume for volume in mounts.values())
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "3Gi"},
                                      "limits": {"cpu": "2", "memory": "6Gi"}}
    # knative k8s_validation.go:771-816: every threshold of a readiness probe with a period is >= 1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        settings = container[probe]
        assert min(settings[key] for key in ("periodSeconds", "timeoutSeconds", "failureThreshold",
                                             "successThreshold")) >= 1
    assert _env(container)["HF_HUB_OFFLINE"]["value"] == "1"
    assert set(_env(container)) == {"STORAGE_URI", "HF_HUB_OFFLINE"}
    assert service["metadata"]["labels"] == {"app.kubernetes.io/name": "resume-ner",
                                             "app.kubernetes.io/component": "serving"}


def test_image_deployment_mode_replicas_and_resources_are_arguments(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RESUME_NER_IMAGE", "acr.io/resume-ner:env")
    assert _container(_service())["image"] == "acr.io/resume-ner:env"
    # KServe v0.15.2 pkg/constants/constants.go:92 and 424-425: serving.kserve.io/deploymentMode, RawDeployment or
    # Serverless; only Knative scales to zero
    assert _service()["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    service = _service(image="acr.io/resume-ner:1.2.0", deployment_mode="Serverless", min_replicas=0,
                       max_replicas=5, cpu_request="500m", cpu_limit="4", memory_request="3Gi", memory_limit="6Gi")
    assert_valid(service)
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert (_predictor(service)["minReplicas"], _predictor(service)["maxReplicas"]) == (0, 5)
    assert _container(service)["image"] == "acr.io/resume-ner:1.2.0"
    assert _container(service)["resources"]["limits"] == {"cpu": "4", "memory": "6Gi"}


def test_every_invalid_argument_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        _service(name="Champion_1", namespace="Team A", runtime="tensorflow", deployment_mode="Knative",
                 min_replicas=-1, max_replicas=0, workers=0, cpu_request="3", cpu_limit="2", memory_limit="lots",
                 image=" ", service_account="", mlflow_secret="Bad Secret")
    message = str(error.value)
    for expected in ("name 'Champion_1'", "namespace 'Team A'", "service_account ''", "runtime 'tensorflow'",
                     "image ' '", "deployment_mode 'Knative'", "min_replicas -1", "max_replicas 0", "workers 0",
                     "cpu request 3 exceeds its limit 2", "'lots' is not a memory quantity",
                     "mlflow_secret 'Bad Secret'"):
        assert expected in message, expected
    with pytest.raises(ConfigError, match="must be a DNS-1035 label of at most 47"):
        _service(name="a" * 48)  # <name>-predictor-00001 must fit a 63-character label
    with pytest.raises(ConfigError, match="min_replicas 0: must be an integer >= 1 in RawDeployment"):
        _service(min_replicas=0)
    with pytest.raises(ConfigError, match="serving_runtime 'My Runtime'"):
        _service(runtime="mlserver", serving_runtime="My Runtime")


# ---------------------------------------------------------------------------------------------------------------
# Credentials


@pytest.mark.parametrize("uri", [
    "https://account.blob.core.windows.net/models/m?sv=2024-01-01&sig=c2VjcmV0U0FTc2lnbmF0dXJl",
    "s3://AKIAEXAMPLE:c2VjcmV0S2V5@models/m",
    "https://user:hunter2@models.example.com/m.tar.gz",
])
def test_a_credential_in_the_storage_uri_is_refused_and_never_shown(uri: str):
    with pytest.raises(ConfigError, match="holds a credential") as error:
        _service(storage_uri=uri)
    for secret in ("c2VjcmV0U0FTc2lnbmF0dXJl", "c2VjcmV0S2V5", "hunter2"):
        assert secret not in str(error.value)
    with pytest.raises(ConfigError, match="holds a credential"):
        storage_uri_of(uri)


def test_mlflow_credentials_come_only_from_a_secret_reference():
    config = load(None, ["tracking.tracking_uri=http://mlflow.resume-ner.svc.cluster.local:5000"])
    service = _service(config, mlflow_secret="resume-ner-mlflow")
    assert_valid(service)
    env = _env(_container(service))
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.resume-ner.svc.cluster.local:5000"
    for key, variable in config.pipeline.mlflow_secret_env.items():
        assert env[variable] == {"name": variable, "valueFrom": {"secretKeyRef": {
            "name": "resume-ner-mlflow", "key": key, "optional": True}}}
    with pytest.raises(ConfigError, match="env MLFLOW_TRACKING_URI=http://\\*\\*\\*@mlflow:5000: holds a credential"):
        _service(load(None, ["tracking.tracking_uri=http://admin:hunter2@mlflow:5000"]), mlflow_secret="s")


# ---------------------------------------------------------------------------------------------------------------
# Storage URIs


@pytest.mark.parametrize(("artifact_uri", "destination", "expected"), [
    (STORAGE_URI, None, STORAGE_URI),
    ("gs://models/m", None, "gs://models/m"),
    ("pvc://mlflow-artifacts/artifacts/1/r/artifacts/mlflow_model", None,
     "pvc://mlflow-artifacts/artifacts/1/r/artifacts/mlflow_model"),
    ("https://acct.blob.core.windows.net/mlflow/1/r/artifacts/mlflow_model", None,
     "https://acct.blob.core.windows.net/mlflow/1/r/artifacts/mlflow_model"),
    # MLflow's form of an Azure Blob location (its AzureBlobArtifactRepository)
    ("wasbs://mlflow@acct.blob.core.windows.net/mlflow/1/r/artifacts/mlflow_model", None,
     "https://acct.blob.core.windows.net/mlflow/mlflow/1/r/artifacts/mlflow_model"),
    # the proxied artifacts of the tracking server of manifests/base (--serve-artifacts): mlflow/server/handlers.py
    # _download_artifact serves mlflow-artifacts:/PATH from PATH under --artifacts-destination
    ("mlflow-artifacts:/1/r/artifacts/mlflow_model", "wasbs://mlflow@acct.blob.core.windows.net/mlflow/",
     "https://acct.blob.core.windows.net/mlflow/mlflow/1/r/artifacts/mlflow_model"),
    ("mlflow-artifacts://mlflow.resume-ner:5000/1/r/artifacts/mlflow_model", "s3://bucket/root",
     "s3://bucket/root/1/r/artifacts/mlflow_model"),
    ("https://models.example.com/champion.tar.gz", None, "https://models.example.com/champion.tar.gz"),
])
def test_storage_uri_of_maps_artifact_locations_to_what_kserve_downloads(artifact_uri, destination, expected):
    # KServe v0.15.2 pkg/controller/v1beta1/inferenceservice/utils/utils.go:45-53, 346-377 (accepted prefixes and
    # the Azure Blob form) and python/kserve/kserve/storage/storage.py:36-49 (what the storage initializer
    # downloads), 193-290 and 501-561 (an S3 or Azure prefix as a directory, its layout kept)
    uri = storage_uri_of(artifact_uri, artifacts_destination=destination)
    assert uri == expected
    assert_valid(_service(storage_uri=uri))


@pytest.mark.parametrize(("artifact_uri", "destination", "message"), [
    ("runs:/0123/mlflow_model", None, "an MLflow URI, which only the tracking server resolves"),
    ("models:/resume-ner@champion", None, "an MLflow URI"),
    ("mlflow-artifacts:/1/r/artifacts/mlflow_model", None, "give the server's --artifacts-destination"),
    ("mlflow-artifacts:/1/r/artifacts/mlflow_model", "/mnt/mlflow/artifacts", "pvc://CLAIM/PATH"),
    # KServe v0.15.2 python/kserve/kserve/storage/storage.py:699-772 _download_from_uri: a plain http(s) URL is one
    # file
    ("http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/mlflow_model", None,
     "downloads a plain http(s) URL as one file"),
    ("file:///models/champion", None, "not a location KServe's storage initializer downloads"),
    ("wasbs://acct.blob.core.windows.net/m", None, "expected wasbs://CONTAINER@ACCOUNT"),
])
def test_storage_uri_of_refuses_what_kserve_cannot_download(artifact_uri, destination, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        storage_uri_of(artifact_uri, artifacts_destination=destination)
    with pytest.raises(ConfigError, match="MLflow's form of an Azure Blob location"):
        _service(storage_uri="wasbs://mlflow@acct.blob.core.windows.net/m")  # the builder takes storage URIs


# ---------------------------------------------------------------------------------------------------------------
# The MLServer form


def test_the_mlserver_form_is_kserves_mlflow_model_format_on_protocol_v2():
    service = _service(runtime="mlserver", serving_runtime="resume-ner-mlserver")
    assert_valid(service)
    predictor = _predictor(service)
    assert "containers" not in predictor and "volumes" not in predictor
    model = predictor["model"]
    # KServe v0.15.2 config/runtimes/kserve-mlserver.yaml: model formats mlflow 1 and 2, protocolVersions v2,
    # MLSERVER_HTTP_PORT 8080; pkg/apis/serving/v1beta1/predictor_model.go:129-159: a format without a version
    # matches a runtime's format by name (the model is saved by MLflow 3)
    assert model["modelFormat"] == {"name": "mlflow"} and model["protocolVersion"] == "v2"
    assert model["runtime"] == "resume-ner-mlserver" and model["storageUri"] == STORAGE_URI
    assert model["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert model["securityContext"]["runAsNonRoot"] is True and "runAsUser" not in model["securityContext"]
    assert model["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert _predictor(_service(runtime="mlserver"))["model"]["runtime"] == "kserve-mlserver"


# ---------------------------------------------------------------------------------------------------------------
# The command and the checked-in manifest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resume-ner")
    k8s_commands.register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    return parser


def _render(argv: list[str], capsys) -> tuple[str, str]:
    args = _parser().parse_args(["k8s", "inferenceservice", "render", *argv])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_the_checked_in_manifest_is_what_the_command_renders(capsys):
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    header = [line for line in lines if line.startswith("#")]
    body = "".join(lines[len(header):])
    assert "".join(lines[:len(header)]) == "".join(header), "comments only at the top"
    out, err = _render(["--storage-uri", EXAMPLE_STORAGE_URI], capsys)
    assert body == out, "manifests/serving/inferenceservice.yaml drifted: render it again (see its header)"
    assert err == ""
    service = yaml.safe_load(body)
    assert service == build_inference_service(load(), storage_uri=EXAMPLE_STORAGE_URI)
    assert_valid(service)
    assert "REPLACE_ME" in _env(_container(service))["STORAGE_URI"]["value"]
    assert "resume-ner k8s inferenceservice render --storage-uri" in "".join(header)
    assert EXAMPLE_STORAGE_URI in "".join(header)


def test_the_serving_kustomization_builds_a_valid_service_in_its_namespace():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    built = subprocess.run([kubectl, "kustomize", str(EXAMPLE.parent)], capture_output=True, text=True, timeout=60,
                           check=True).stdout
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(built) if doc}
    assert set(docs) == {"Namespace", "ServiceAccount", "InferenceService"}
    service = docs["InferenceService"]
    assert_valid(service)
    assert service["metadata"]["namespace"] == docs["Namespace"]["metadata"]["name"] == "resume-ner-serving"
    assert docs["ServiceAccount"]["metadata"]["name"] == _predictor(service)["serviceAccountName"]
    assert docs["ServiceAccount"]["automountServiceAccountToken"] is False
    # the storage initializer KServe v0.15.2 injects has no security context (storage_initializer_injector.go:
    # 376-395), which the "restricted" Pod Security Standard refuses
    labels = docs["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_the_command_prints_a_valid_manifest_with_its_options(capsys):
    out, err = _render([
        "--storage-uri", "mlflow-artifacts:/1/0123/artifacts/mlflow_model",
        "--artifacts-destination", "wasbs://mlflow@acct.blob.core.windows.net/mlflow",
        "--name", "champion", "--namespace", "team-a", "--image", "acr.io/resume-ner:1.2.0",
        "--deployment-mode", "Serverless", "--min-replicas", "0", "--max-replicas", "5", "--workers", "2",
        "--cpu-request", "2", "--cpu-limit", "4", "--memory-request", "4Gi", "--memory-limit", "8Gi",
        "--service-account", "models", "--mlflow-secret", "resume-ner-mlflow"], capsys)
    service = yaml.safe_load(out)
    assert_valid(service)
    assert err == ""
    assert service["metadata"]["name"] == "champion" and service["metadata"]["namespace"] == "team-a"
    container = _container(service)
    assert _env(container)["STORAGE_URI"]["value"] == (
        "https://acct.blob.core.windows.net/mlflow/mlflow/1/0123/artifacts/mlflow_model")
    assert container["image"] == "acr.io/resume-ner:1.2.0"
    assert container["args"][container["args"].index("--workers") + 1] == "2"
    assert _predictor(service)["serviceAccountName"] == "models"
    assert "secretKeyRef" in _env(container)["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]
    assert json.loads(json.dumps(service)) == service  # plain data, no YAML tags


def test_the_command_warns_about_kserves_own_mlserver_runtime(capsys):
    out, err = _render(["--storage-uri", STORAGE_URI, "--runtime", "mlserver"], capsys)
    assert_valid(yaml.safe_load(out))
    assert "kserve-mlserver image has neither resume-ner nor torch" in err
    out, err = _render(["--storage-uri", STORAGE_URI, "--runtime", "mlserver", "--serving-runtime", "ours"], capsys)
    assert yaml.safe_load(out)["spec"]["predictor"]["model"]["runtime"] == "ours" and err == ""


def test_the_command_refuses_a_credential_without_showing_it(capsys):
    args = _parser().parse_args(["k8s", "inferenceservice", "render", "--storage-uri",
                                 "https://acct.blob.core.windows.net/m/x?sig=c2VjcmV0U0FTc2lnbmF0dXJl"])
    with pytest.raises(ConfigError, match="holds a credential") as error:
        args.func(args)
    assert "c2VjcmV0U0FTc2lnbmF0dXJl" not in str(error.value)
    assert capsys.readouterr().out == ""


def test_the_command_has_help(capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["k8s", "inferenceservice", "render", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--storage-uri URI" in out and "--config-dir" in out and "/mnt/models" in out
