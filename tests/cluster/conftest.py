"""The cluster tier (`make test-cluster`): a real single-node Kubernetes v1.20.2 on 127.0.0.1 (API server with RBAC,
controller manager, scheduler, a kubelet on the container tier's Docker engine, kube-proxy), built here from Debian's
source package (tests/cluster/k8s/build.sh, cached under $RESUME_NER_CACHE by the script's hash) and stopped by its PIDs at
the end, also when a check fails (tests/cluster/k8s/down.sh). Needs root.

1.20 is older than AKS: the tier checks what holds across versions (admission of core objects and of a CRD's
schema, RBAC, scheduling, the services running, Service routing); kubernetes-validate checks the manifests against a
current schema in `make test`. No Training Operator (its pods are emulated: test_pytorchjob_emulation.py), Argo or
KFP backend runs here, and no CNI plugin or cluster DNS: pods use the host's network and hostAliases.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml
from support.cluster import (K8S, MODES, POSTGRES_IMAGE, REPO, RUN_DIR, host_path_volume, kubectl, node_ip,
                             on_this_machine)
from support.containers import engine_answers
from support.project_image import build_project_image, run_or_fail
from support.pytorchjob_schema import pytorchjob_crd

FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    """The environment of kubectl and docker commands against the running cluster (KUBECONFIG, DOCKER_HOST)."""
    if os.geteuid() != 0:
        pytest.fail("the cluster tier runs an API server, a kubelet and dockerd: run it as root")
    if shutil.which("kubectl") is None:
        pytest.fail("the cluster tier drives the cluster with kubectl (1.21 or later, for kustomize's `labels`)")
    env = dict(os.environ)
    started = time.monotonic()
    binaries = run_or_fail([K8S / "build.sh"], env).stdout.strip().splitlines()[-1]
    FIGURES["kubernetes build"] = f"{time.monotonic() - started:.0f}s"
    engine_started = not engine_answers(env)
    if engine_started:
        env["DOCKER_HOST"] = run_or_fail([REPO / "images" / "dockerd.sh", "start"],
                                         env).stdout.strip().splitlines()[-1]
    subprocess.run([str(K8S / "down.sh"), str(RUN_DIR)], env=env, capture_output=True, timeout=120)  # leftovers
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    started = time.monotonic()
    try:
        env["KUBECONFIG"] = run_or_fail([K8S / "up.sh", binaries, RUN_DIR], env,
                                        timeout=300).stdout.strip().splitlines()[-1]
        FIGURES["cluster start"] = f"{time.monotonic() - started:.0f}s"
        yield env
    finally:
        subprocess.run([str(K8S / "down.sh"), str(RUN_DIR)], env=env, capture_output=True, timeout=300)
        if engine_started:
            subprocess.run([str(REPO / "images" / "dockerd.sh"), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def applied(cluster) -> dict[str, str]:
    """The manifests applied for real (the KFP namespaces first: KFP, not the project, creates them), and the CRD."""
    for namespace in MODES.values():
        kubectl(cluster, "create", "namespace", namespace)
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(pytorchjob_crd()))
    kubectl(cluster, "wait", "--for=condition=Established", "crd/pytorchjobs.kubeflow.org", "--timeout=60s")
    for directory in ("aks", *MODES):
        built = kubectl(cluster, "kustomize", str(REPO / "manifests" / directory)).stdout
        namespaces = [doc for doc in yaml.safe_load_all(built) if doc and doc["kind"] == "Namespace"]
        for namespace in namespaces:  # what lives in a namespace is admitted only once it exists
            kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(namespace))
            kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(namespace))
        kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=built)
        kubectl(cluster, "apply", "-f", "-", stdin=built)
    return cluster


@pytest.fixture(scope="session")
def tier_figures() -> dict[str, str]:
    """What the tier measured, printed at its end."""
    return FIGURES


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.write_line("cluster tier: " + "; ".join(f"{k} {v}" for k, v in FIGURES.items()))


@pytest.fixture(scope="session")
def image(cluster) -> str:
    """The project image in the kubelet's engine (built as the container tier builds it; cached layers)."""
    return build_project_image(cluster, FIGURES)


@pytest.fixture(scope="session")
def services(applied, image) -> dict:
    """manifests/aks's PostgreSQL StatefulSet and MLflow Deployment running for real and Ready, with this machine's
    patches (images, host network, host aliases for Service names, hostPath volumes: see test_services.py).
    Returns the cluster's ``env``, the MLflow Service's in-cluster URL and cluster IP, the URL this machine reaches
    it at, and the artifacts volume's directory."""
    env = applied
    started = time.monotonic()
    run_or_fail([K8S / "postgres-image.sh", POSTGRES_IMAGE], env)
    FIGURES["postgres image"] = f"{time.monotonic() - started:.0f}s"
    started = time.monotonic()
    namespace = "resume-ner"
    host_path_volume(env, namespace, "data-postgres-0", 999)
    artifacts = host_path_volume(env, namespace, "mlflow-artifacts", 10001)
    password = secrets.token_urlsafe(18)
    kubectl(env, "create", "secret", "generic", "resume-ner-postgres", "-n", namespace,
            f"--from-literal=password={password}")
    kubectl(env, "create", "secret", "generic", "resume-ner-mlflow-backend", "-n", namespace,
            f"--from-literal=backend-store-uri=postgresql+psycopg2://postgres:{password}@postgres:5432/mlflow",
            "--from-literal=artifacts-destination=/mnt/mlflow/artifacts")
    ip = node_ip(env)  # a headless Service's name resolves to its pods' IPs: here, the node's
    # PostgreSQL first: an MLflow server that starts without its database backs off for a minute
    for kind, name, aliases in (("statefulset", "postgres", {}), ("deployment", "mlflow", {"postgres": ip})):
        container = {"name": name, "image": POSTGRES_IMAGE if name == "postgres" else image,
                     "imagePullPolicy": "Never"}
        kubectl(env, "patch", kind, name, "-n", namespace, "--type=strategic", "-p",
                json.dumps({"spec": {"template": {"spec": {**on_this_machine(aliases), "containers": [container]}}}}))
        if kind == "statefulset":  # its pod never ran (no image): a rolling update would wait on it forever
            kubectl(env, "delete", "pod", f"{name}-0", "-n", namespace, "--grace-period=0", "--force",
                    check=False)
        done = kubectl(env, "rollout", "status", f"{kind}/{name}", "-n", namespace, "--timeout=420s", check=False)
        if done.returncode != 0:
            pods = kubectl(env, "get", "pods", "-n", namespace, "-o", "wide").stdout
            logs = kubectl(env, "logs", "-n", namespace, f"{kind}/{name}", "--tail=30", check=False)
            pytest.fail(f"{kind}/{name} never became Ready: {done.stderr}\n{pods}\n{logs.stdout}{logs.stderr}")
    FIGURES["services ready"] = f"{time.monotonic() - started:.0f}s"
    cluster_ip = kubectl(env, "get", "service", "mlflow", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}").stdout
    return {"env": env, "in_cluster_url": "http://mlflow.resume-ner.svc.cluster.local:5000",
            "cluster_ip": cluster_ip, "local_url": "http://127.0.0.1:5000", "artifacts": str(artifacts)}
