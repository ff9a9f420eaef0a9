"""The Kubernetes manifests (manifests/), the container images (images/) and the compiled pipeline, as a platform
team applies them: schema-valid objects, kustomizations that build, one image name everywhere, locked-down pods,
least-privilege RBAC, and no secret anywhere in git or in a compiled spec."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from resume_ner.config import load

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = REPO / "manifests"
IMAGES = REPO / "images"
DOCKERFILES = [IMAGES / "Dockerfile", IMAGES / "Dockerfile.cuda"]
SECRETS_EXAMPLE = MANIFESTS / "base" / "secrets.example.yaml"
PLACEHOLDER = "REPLACE_ME"

# The Kubernetes version the manifests are validated against: one AKS supports (1.33 and later work).
K8S_VERSION = "1.34.0"
# Each kustomization and the namespace it puts its objects in: the services in resume-ner, the pipeline's part in
# the namespace KFP runs pipeline pods in (pipeline/ is the base of the two KFP modes and sets none), the model server
# in resume-ner-serving.
KUSTOMIZE_NAMESPACES = {"base": "resume-ner", "aks": "resume-ner", "pipeline": None, "kfp-standalone": "kubeflow",
                        "kfp-multi-user": "kubeflow-user-example-com", "serving": "resume-ner-serving"}
# The account KFP runs pipeline pods as, per mode (backend apiserver/common/const.go; multi-user params.env).
KFP_ACCOUNTS = {"kfp-standalone": "pipeline-runner", "kfp-multi-user": "default-editor"}

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "PyTorchJob", "InferenceService")
SERVER_KINDS = ("Deployment", "StatefulSet")
# validated against their own schemas elsewhere (support/pytorchjob_schema.py, support/inferenceservice_schema.py)
CRD_KINDS = ("PyTorchJob", "InferenceService")

# What the pipeline may do against the API (resume_ner.k8s.pytorchjob): nothing else.
ALLOWED_RULES = {
    ("kubeflow.org", "pytorchjobs"): {"create", "get", "list", "watch", "delete"},
    ("kubeflow.org", "pytorchjobs/status"): {"get"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get", "list", "watch"},
}

# Environment variables whose names say they hold a credential: always valueFrom, never a literal value.
SENSITIVE_ENV = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL|CONNECTION_STRING", re.IGNORECASE)
# Values that only stand for a credential (documentation, shell variables).
PLACEHOLDER_VALUE = re.compile(r"^(REPLACE_ME|PASSWORD|USER|\$\w+|\$\{\w+\}|\$\(\w+\)|<[^>]+>)$")
URL_USERINFO = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s/:@'\"]+:(?P<secret>[^\s/@'\"]+)@", re.IGNORECASE)
CREDENTIAL_PATTERNS = [
    re.compile(r"\bpass(?:word|wd)?\s*=\s*['\"]?(?P<secret>[^\s'\"&;,)]+)", re.IGNORECASE),
    re.compile(r"\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]{16,}=*)", re.IGNORECASE),
    re.compile(r"\bAccountKey=(?P<secret>[A-Za-z0-9+/]{16,}=*)"),
    re.compile(r"\b(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"),
    re.compile(r"(?P<secret>-----BEGIN [A-Z ]*PRIVATE KEY-----)"),
]


# ---------------------------------------------------------------------------------------------------------------
# Reading the manifests


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


MANIFEST_FILES = sorted(MANIFESTS.rglob("*.yaml"))
KUSTOMIZATIONS = [path for path in MANIFEST_FILES if path.name == "kustomization.yaml"]
OBJECT_FILES = [path for path in MANIFEST_FILES if path.name != "kustomization.yaml"]
OBJECTS = [(path, doc) for path in OBJECT_FILES for doc in _documents(path)]


def _id(path: Path, doc: dict[str, Any]) -> str:
    return f"{path.relative_to(MANIFESTS)}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _of_kind(*kinds: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in OBJECTS if doc.get("kind") in kinds]


def _pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(replica name, pod spec) of a Deployment, StatefulSet, PyTorchJob or InferenceService (whose predictor holds
    the pod's fields)."""
    if doc["kind"] == "InferenceService":
        yield "predictor", doc["spec"]["predictor"]
    elif doc["kind"] == "PyTorchJob":
        for replica, spec in doc["spec"]["pytorchReplicaSpecs"].items():
            yield replica, spec["template"]["spec"]
    else:
        yield doc["kind"], doc["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def _workload_containers() -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(id, workload, pod spec, container) of every container of every workload."""
    found = []
    for path, doc in _of_kind(*WORKLOAD_KINDS):
        for replica, pod in _pod_specs(doc):
            for container in _containers(pod):
                found.append((f"{_id(path, doc)}:{replica}:{container['name']}", doc, pod, container))
    return found


WORKLOAD_CONTAINERS = _workload_containers()


def _split_image(image: str) -> tuple[str, str]:
    """``registry:5000/name:tag`` -> (``registry:5000/name``, ``tag``)."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def _kustomize_build(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def _validate(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(item) for item in error.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata'].get('name')} is invalid for Kubernetes {K8S_VERSION}: "
                    f"{path}: {error.message}")


def test_manifests_exist():
    kinds = {doc["kind"] for _, doc in OBJECTS}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "StatefulSet", "Service",
            "PersistentVolumeClaim", "PyTorchJob", "Secret", "InferenceService"} <= kinds
    assert {path.parent.name for path in KUSTOMIZATIONS} == set(KUSTOMIZE_NAMESPACES)


# ---------------------------------------------------------------------------------------------------------------
# Schemas


def test_k8s_version_is_shipped_by_kubernetes_validate():
    import kubernetes_validate.utils

    assert K8S_VERSION in kubernetes_validate.utils.all_versions()


@pytest.mark.parametrize(("path", "doc"), [(p, d) for p, d in OBJECTS if d["kind"] not in CRD_KINDS],
                         ids=[_id(p, d) for p, d in OBJECTS if d["kind"] not in CRD_KINDS])
def test_object_is_valid_for_kubernetes(path: Path, doc: dict[str, Any]):
    _validate(doc)


@pytest.mark.parametrize("directory", [path.parent for path in KUSTOMIZATIONS], ids=lambda p: p.name)
def test_kustomization_builds_valid_objects_in_the_namespace(directory: Path):
    built = _kustomize_build(directory)
    assert built
    for doc in built:
        if doc["kind"] not in CRD_KINDS:
            _validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == KUSTOMIZE_NAMESPACES[directory.name], doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "resume-ner", doc["metadata"]["name"]
    assert not [doc for doc in built if doc["kind"] == "Secret"], "kustomize must not apply secrets.example.yaml"


def test_aks_storage_classes():
    built = {(doc["kind"], doc["metadata"]["name"]): doc for doc in _kustomize_build(MANIFESTS / "aks")}
    postgres = built[("StatefulSet", "postgres")]
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "managed-csi-premium"
    assert built[("PersistentVolumeClaim", "mlflow-artifacts")]["spec"]["storageClassName"] == "managed-csi-premium"
    for mode in KFP_ACCOUNTS:  # the shared volume, where the pipeline's pods and the PyTorchJob's run
        built = {(doc["kind"], doc["metadata"]["name"]): doc for doc in _kustomize_build(MANIFESTS / mode)}
        pvc = built[("PersistentVolumeClaim", "resume-ner-data")]
        assert pvc["spec"]["storageClassName"] == "azurefile-csi" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        assert load().pipeline.volume_mount_path == "/mnt/resume-ner"


# ---------------------------------------------------------------------------------------------------------------
# Kustomizations and the image name


def _kustomization_objects(kustomization: Path) -> list[dict[str, Any]]:
    """Every object a kustomization's resources hold (following sub-kustomizations)."""
    objects = []
    for resource in yaml.safe_load(kustomization.read_text(encoding="utf-8")).get("resources", []):
        target = (kustomization.parent / resource).resolve()
        if target.is_dir():
            objects += _kustomization_objects(target / "kustomization.yaml")
        else:
            objects += _documents(target)
    return objects


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_kustomization_references_exist(kustomization: Path):
    spec = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    assert spec.get("namespace") == KUSTOMIZE_NAMESPACES[kustomization.parent.name]
    assert spec["resources"]
    for resource in spec["resources"]:
        target = kustomization.parent / resource
        assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{kustomization}: {resource}"
        assert target.resolve() != SECRETS_EXAMPLE, "secrets.example.yaml must never be applied by kustomize"
    objects = {(doc["kind"], doc["metadata"]["name"]) for doc in _kustomization_objects(kustomization)}
    for patch in spec.get("patches", []):
        if "path" in patch:
            assert (kustomization.parent / patch["path"]).is_file(), f"{kustomization}: {patch['path']}"
        else:
            assert patch.get("patch", "").strip(), f"{kustomization}: empty inline patch"
        if "target" in patch:
            target = (patch["target"]["kind"], patch["target"]["name"])
            assert target in objects, f"{kustomization}: patch target {target} is not among its resources"


def test_workloads_running_the_project_image_name_the_pipeline_image():
    image = load().pipeline.image
    project = [c for _, _, _, c in WORKLOAD_CONTAINERS if _split_image(c["image"])[0].endswith("resume-ner")]
    assert project, "the PyTorchJob runs the project image"
    assert {c["image"] for c in project} == {image}


def test_every_image_is_pinned():
    for ident, _, _, container in WORKLOAD_CONTAINERS:
        name, tag = _split_image(container["image"])
        assert tag != "latest" and not tag.startswith("latest"), f"{ident}: {container['image']} is not pinned"


# ---------------------------------------------------------------------------------------------------------------
# Pod security and resources


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    value = container.get("securityContext", {}).get(key)
    return pod.get("securityContext", {}).get(key) if value is None else value


@pytest.mark.parametrize(("ident", "workload", "pod", "container"), WORKLOAD_CONTAINERS,
                         ids=[c[0] for c in WORKLOAD_CONTAINERS])
def test_container_is_locked_down(ident: str, workload: dict, pod: dict, container: dict):
    security = container.get("securityContext", {})
    assert _effective(pod, container, "runAsNonRoot") is True
    assert _effective(pod, container, "runAsUser") != 0
    assert security.get("allowPrivilegeEscalation") is False
    assert security.get("privileged", False) is False
    assert "ALL" in security.get("capabilities", {}).get("drop", [])
    assert not security.get("capabilities", {}).get("add")
    assert _effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}
    assert isinstance(security.get("readOnlyRootFilesystem"), bool), "say whether the root filesystem is read-only"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v]


@pytest.mark.parametrize(("ident", "workload", "pod", "container"), WORKLOAD_CONTAINERS,
                         ids=[c[0] for c in WORKLOAD_CONTAINERS])
def test_container_has_requests_and_limits(ident: str, workload: dict, pod: dict, container: dict):
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{ident}: {kind}"


@pytest.mark.parametrize(("ident", "workload", "pod", "container"),
                         [c for c in WORKLOAD_CONTAINERS if c[1]["kind"] in SERVER_KINDS],
                         ids=[c[0] for c in WORKLOAD_CONTAINERS if c[1]["kind"] in SERVER_KINDS])
def test_server_has_readiness_and_liveness_probes(ident: str, workload: dict, pod: dict, container: dict):
    assert container.get("readinessProbe"), ident
    assert container.get("livenessProbe"), ident


def test_read_only_root_filesystems_have_a_writable_tmp():
    for ident, workload, pod, container in WORKLOAD_CONTAINERS:
        if container["securityContext"]["readOnlyRootFilesystem"]:
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in mounts.get("/tmp", {}), f"{ident}: read-only root without an emptyDir /tmp"
    read_only = {c["name"] for _, w, _, c in WORKLOAD_CONTAINERS if c["securityContext"]["readOnlyRootFilesystem"]}
    assert {"mlflow", "pytorch"} <= read_only


def test_mlflow_server_reads_its_stores_from_a_secret():
    (_, deployment), = [(p, d) for p, d in _of_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    args = " ".join(container["args"])
    for variable, flag in (("MLFLOW_BACKEND_STORE_URI", "--backend-store-uri"),
                           ("MLFLOW_ARTIFACTS_DESTINATION", "--artifacts-destination")):
        assert "secretKeyRef" in env[variable]["valueFrom"]
        assert f"{flag} $({variable})" in args
    assert "--serve-artifacts" in args and "--port 5000" in args
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    (_, service), = [(p, d) for p, d in _of_kind("Service") if d["metadata"]["name"] == "mlflow"]
    assert service["spec"]["ports"][0]["port"] == 5000
    # The pipeline's default tracking URI is this Service.
    assert load().pipeline.mlflow_uri == "http://mlflow.resume-ner.svc.cluster.local:5000"


def test_pytorchjob_runs_torchrun_on_the_gpu_pool_with_the_pipeline_settings():
    pipeline = load().pipeline
    (_, job), = _of_kind("PyTorchJob")
    assert job["apiVersion"] == "kubeflow.org/v1"
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    assert job["spec"]["nprocPerNode"] == "1"
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] in ("None", "Running")
    assert isinstance(job["spec"]["runPolicy"]["backoffLimit"], int)
    for replica, pod in _pod_specs(job):
        assert job["spec"]["pytorchReplicaSpecs"][replica]["replicas"] == 1
        assert pod["serviceAccountName"] == pipeline.job_service_account
        assert pod["automountServiceAccountToken"] is False
        template = job["spec"]["pytorchReplicaSpecs"][replica]["template"]
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        assert pod["nodeSelector"] == dict(pipeline.gpu_node_selector)
        assert pod["tolerations"] == pipeline.gpu_tolerations
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["command"] == ["torchrun"]
        assert container["args"][:2] == ["-m", "resume_ner.cli.train"]
        assert container["resources"]["limits"][pipeline.gpu_accelerator] == 1
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"] == pipeline.mlflow_uri
        for key, variable in pipeline.mlflow_secret_env.items():
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"], ref["optional"]) == (pipeline.mlflow_secret, key, True)
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert mounts[pipeline.volume_mount_path]["persistentVolumeClaim"]["claimName"] == "resume-ner-data"
        assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"


# ---------------------------------------------------------------------------------------------------------------
# RBAC


def test_role_grants_only_what_the_pipeline_needs():
    roles = _of_kind("Role", "ClusterRole")
    assert [doc["kind"] for _, doc in roles] == ["Role"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in roles[0][1]["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == ALLOWED_RULES


@pytest.mark.parametrize("mode", sorted(KFP_ACCOUNTS))
def test_the_role_is_bound_to_the_account_kfp_runs_pipeline_pods_as(mode: str):
    """The pipeline's pods run as KFP's account in KFP's namespace, where the kfp-launcher ConfigMap and the artifact
    store Secret are (backend config/env.go:95-103 reads both from the pod's namespace): our Role joins it there."""
    built = _kustomize_build(MANIFESTS / mode)
    namespace = KUSTOMIZE_NAMESPACES[mode]
    [binding] = [doc for doc in built if doc["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "resume-ner-pipeline"}
    # no subject namespace: the binding's own, so `kustomize edit set namespace` moves both
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": KFP_ACCOUNTS[mode]}]
    [role] = [doc for doc in built if doc["kind"] == "Role"]
    assert role["metadata"]["namespace"] == namespace
    [account] = [doc for doc in built if doc["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == load().pipeline.job_service_account
    assert account["automountServiceAccountToken"] is False
    assert not [doc for doc in built if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_pipeline_secrets_are_created_where_the_pipeline_pods_run():
    pipeline = load().pipeline
    secrets = {doc["metadata"]["name"]: doc for _, doc in _of_kind("Secret")}
    for name in (pipeline.mlflow_secret, pipeline.optuna_secret):  # read by the pipeline's pods as env
        assert "namespace" not in secrets[name]["metadata"], name
    for name in ("resume-ner-postgres", "resume-ner-mlflow-backend"):  # read by the servers
        assert secrets[name]["metadata"]["namespace"] == "resume-ner", name


def test_servers_take_plain_connections_from_kfps_unmeshed_pods():
    """KFP runs pipeline pods without an Istio sidecar (apiserver/template/v2_template.go:170): a server with one
    would refuse them under Kubeflow's STRICT mTLS."""
    for _, doc in _of_kind(*SERVER_KINDS):
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("sidecar.istio.io/inject") == "false", doc["metadata"]["name"]


# ---------------------------------------------------------------------------------------------------------------
# Secrets hygiene


def _credentials_in(text: str) -> list[str]:
    """Credential-looking substrings of ``text`` (placeholders such as REPLACE_ME or $VAR excepted)."""
    found = []
    for pattern in [URL_USERINFO, *CREDENTIAL_PATTERNS]:
        for match in pattern.finditer(text):
            if not PLACEHOLDER_VALUE.match(match.group("secret")):
                found.append(match.group(0))
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _text_and_strings(path: Path) -> str:
    """A file's text and every string of its YAML documents (folded lines joined back)."""
    text = path.read_text(encoding="utf-8")
    return "\n".join([text, *(s for doc in yaml.safe_load_all(text) for s in _strings(doc))])


def test_credential_patterns_catch_credentials():
    assert _credentials_in("postgresql://mlflow:hunter2@db:5432/mlflow")
    assert _credentials_in("sqlite:///x.db?password=hunter2")
    assert _credentials_in("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345")
    assert _credentials_in("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0c2VjcmV0c2VjcmV0==")
    assert not _credentials_in("postgresql://postgres:REPLACE_ME@postgres:5432/mlflow")
    assert not _credentials_in("postgresql://postgres:$PGPASS@postgres:5432/mlflow")
    assert not _credentials_in("http://mlflow.resume-ner.svc.cluster.local:5000")


def test_no_literal_credentials_in_env():
    for ident, _, _, container in WORKLOAD_CONTAINERS:
        for env in container.get("env", []):
            if SENSITIVE_ENV.search(env["name"]):
                assert "value" not in env, f"{ident}: {env['name']} must come from a Secret (valueFrom)"
                assert "secretKeyRef" in env["valueFrom"], f"{ident}: {env['name']}"
            if "value" in env:
                assert not _credentials_in(str(env["value"])), f"{ident}: {env['name']} holds a credential"


def test_only_the_example_file_holds_secrets_and_only_placeholders():
    for path, doc in _of_kind("Secret"):
        assert path == SECRETS_EXAMPLE, f"{_id(path, doc)}: Secrets are created with kubectl, never committed"
        assert "data" not in doc, f"{_id(path, doc)}: use stringData placeholders, not base64 data"
        assert doc["stringData"]
        for key, value in doc["stringData"].items():
            assert PLACEHOLDER in value, f"{_id(path, doc)}: {key} must be a {PLACEHOLDER} placeholder"


@pytest.mark.parametrize("path", MANIFEST_FILES + DOCKERFILES + [REPO / ".dockerignore"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_credentials_in_committed_manifests_and_images(path: Path):
    text = path.read_text(encoding="utf-8")
    assert not _credentials_in(text)


def _compiled_files(root: Path) -> list[Path]:
    return sorted((root / "components").glob("*.yaml")) + [root / "pipelines" / "resume_ner_training.yaml"]


def test_no_credentials_in_committed_pipeline_and_components():
    files = _compiled_files(REPO)
    assert len(files) == 6
    for path in files:
        assert not _credentials_in(_text_and_strings(path)), path


def test_compiled_pipeline_never_contains_secrets_from_the_environment(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    from resume_ner.kfp.pipelines import compile_all

    planted = {
        "MLFLOW_TRACKING_PASSWORD": "s3cr3t-planted",
        "MLFLOW_TRACKING_USERNAME": "planted-user",
        "MLFLOW_TRACKING_TOKEN": "planted-tracking-token-0123456789",
        "MLFLOW_TRACKING_URI": "http://planted-user:s3cr3t-uri-planted@mlflow.example.com:5000",
        "RESUME_NER_OPTUNA_STORAGE": "postgresql://optuna:s3cr3t-db-planted@db.example.com:5432/optuna",
        "KFP_TOKEN": "planted-kfp-token-0123456789",
        "AZURE_STORAGE_CONNECTION_STRING": "AccountName=x;AccountKey=cGxhbnRlZC1hY2NvdW50LWtleQ==",
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    written = compile_all(tmp_path, load())
    assert sorted(written) == _compiled_files(tmp_path)
    for path in written:
        text = _text_and_strings(path)
        for name, value in planted.items():
            assert value not in text, f"{path.name} contains ${name}"
        for fragment in ("s3cr3t", "cGxhbnRlZC1hY2NvdW50LWtleQ"):
            assert fragment not in text, path.name
        assert not _credentials_in(text), path.name


# ---------------------------------------------------------------------------------------------------------------
# Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, f"{path}: dangling line continuation"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def _pip_installs(instructions: list[tuple[str, str]]) -> list[tuple[int, list[str]]]:
    """(instruction index, argv) of every install in RUN instructions, in order: images/pip-install.sh (installed
    as pip-install) or a plain `pip install`, with the environment assignments before it."""
    found = []
    for index, (name, args) in enumerate(instructions):
        if name != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", args):
            argv = shlex.split(command)
            words = [a for a in argv if not re.match(r"^[A-Z_]+=", a)]
            if words[:1] == ["pip-install"] or ("pip" in [Path(a).name for a in words[:3]] and "install" in words):
                found.append((index, argv))
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_a_fixed_non_root_uid(dockerfile: Path):
    users = [args for name, args in _final_stage(_instructions(dockerfile)) if name == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert uid == "10001"  # the manifests' runAsUser / fsGroup
    text = dockerfile.read_text(encoding="utf-8")
    assert re.search(r"useradd .*--uid 10001 .*--shell /usr/sbin/nologin", " ".join(text.split()))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_torch_first_then_the_pinned_runtime_set_then_the_project(dockerfile: Path):
    instructions = _instructions(dockerfile)
    installs = _pip_installs(instructions)
    assert installs and all("pip-install" in argv for _, argv in installs), installs  # wheelhouse or index
    torch = [(i, argv) for i, argv in installs if any(a.startswith("torch") for a in argv)]
    assert len(torch) == 1, torch
    torch_index, torch_argv = torch[0]
    assert "torch==2.13.0" in torch_argv
    index_url = next(a.split("=", 1)[1] for a in torch_argv if a.startswith("PIP_INDEX_URL="))
    if dockerfile.name == "Dockerfile":
        assert index_url == "https://download.pytorch.org/whl/cpu"
    else:
        args = dict(a.split("=", 1) for n, a in instructions if n == "ARG" and "=" in a)
        assert index_url == "${TORCH_INDEX_URL}"
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", args["TORCH_INDEX_URL"])
    pinned = [(i, argv) for i, argv in installs if "--constraint" in argv]
    assert len(pinned) == 1, "the runtime set is installed with one pip call, pinned by the lock"
    pinned_index, pinned_argv = pinned[0]
    constraint = " ".join(pinned_argv[pinned_argv.index("--constraint") + 1:][:2])
    assert constraint == "/tmp/install/$(basename ${REQUIREMENTS})"
    assert pinned_argv[-1] == "/tmp/resume-ner[kfp,azureml,backbone]" and torch_index < pinned_index
    project = [(i, argv) for i, argv in installs if "--no-deps" in argv]
    assert len(project) == 1 and project[0][0] > pinned_index
    extras = re.search(r"\[project\.optional-dependencies\](.*?)\n\[", (REPO / "pyproject.toml").read_text(),
                       re.DOTALL).group(1)
    assert {"kfp", "azureml", "backbone"} <= set(re.findall(r"^(\w+) =", extras, re.MULTILINE))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_from_a_wheelhouse_when_given_and_takes_the_lock_as_a_build_arg(dockerfile: Path):
    instructions = _instructions(dockerfile)
    args = dict(a.split("=", 1) for n, a in instructions if n == "ARG" and "=" in a)
    assert args["REQUIREMENTS"] == "requirements.lock"
    copies = [a.split() for n, a in instructions if n == "COPY" and a.split()[-1] == "/tmp/install/"]
    assert copies == [["${REQUIREMENTS}", "build/wheelhouse*", "/tmp/install/"]]
    assert ["images/pip-install.sh", "/usr/local/bin/pip-install"] in [a.split() for n, a in instructions
                                                                         if n == "COPY"]
    helper = (IMAGES / "pip-install.sh").read_text(encoding="utf-8")
    assert "--no-index --find-links /tmp/install" in helper  # with a wheelhouse, no index is contacted
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert f"-f images/{dockerfile.name} " in makefile and "REQUIREMENTS=requirements-azureml.lock" in makefile
    assert (REPO / "requirements-azureml.lock").is_file()


def _steps(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions that install and configure the project, as the CPU and CUDA images must share them: not
    the bases (FROM, and the CUDA image's Python stage), not where torch comes from."""
    instructions = _instructions(dockerfile)
    first = next(i for i, (name, args) in enumerate(instructions) if name == "FROM" and args.endswith("AS build"))
    steps = []
    for name, args in instructions[first + 1:]:
        if name == "FROM" or "TORCH_INDEX_URL" in args or "PIP_INDEX_URL" in args:
            continue
        steps.append((name, args.replace("python3.11 ", "python3 ")))
    return steps


def test_the_cuda_dockerfile_keeps_in_step_with_the_cpu_one():
    """The CUDA image cannot be built here (no CUDA base): it must install and run exactly as the CPU one does."""
    assert _steps(IMAGES / "Dockerfile.cuda") == _steps(IMAGES / "Dockerfile")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_entrypoint_environment_and_sources(dockerfile: Path):
    instructions = _instructions(dockerfile)
    final = _final_stage(instructions)
    entrypoints = [args for name, args in final if name == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == '["resume-ner-entrypoint"]'
    assert ["images/entrypoint.sh", "/usr/local/bin/resume-ner-entrypoint"] in [a.split() for n, a in final
                                                                                  if n == "COPY"]
    assert 'exec resume-ner "$@"' in (IMAGES / "entrypoint.sh").read_text(encoding="utf-8")
    assert [args for name, args in final if name == "WORKDIR"][-1] == "/home/resume-ner"
    env = " ".join(args for name, args in final if name == "ENV")
    for setting in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "TOKENIZERS_PARALLELISM=false",
                    "PYTHONUNBUFFERED=1"):
        assert setting in env.split(), setting
    for name, args in instructions:
        assert not (name == "ADD" and re.search(r"\b(https?|git)://|git@", args)), f"remote ADD: {args}"
        if name in ("ENV", "ARG"):
            assert not SENSITIVE_ENV.search(args.split("=", 1)[0]), f"no secrets in the image: {name} {args}"
    defaults = dict(a.split("=", 1) for n, a in instructions if n == "ARG" and "=" in a)
    stages: set[str] = set()
    for name, args in instructions:
        if name != "FROM":
            continue
        words = args.split()
        image = re.sub(r"^\$\{(\w+)\}$", lambda m: defaults[m.group(1)], words[0])
        if image not in stages:
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"unpinned base {image}"
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    entries = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "runs", "mlruns", "tests", "build"} <= entries
    for needed in ("src", "pyproject.toml", "requirements.lock", "README.md"):
        assert needed not in entries
    # back in after their folders are left out: the wheelhouse of an air-gapped build, the image's scripts
    assert {"!build/wheelhouse", "!images/pip-install.sh", "!images/entrypoint.sh"} <= entries
