"""The cluster tier (`make test-cluster`): a real single-node Kubernetes v1.20.2 on 127.0.0.1 (API server with RBAC,
controller manager, scheduler, a kubelet on the container tier's Docker engine), built here from Debian's source
package (tests/cluster/k8s/build.sh, cached under $RESUME_NER_CACHE by the script's hash) and stopped by its PIDs at
the end, also when a check fails (tests/cluster/k8s/down.sh). Needs root.

1.20 is older than AKS: the tier checks what holds across versions (admission of core objects and of a CRD's
schema, RBAC, scheduling); kubernetes-validate checks the manifests against a current schema in `make test`. No
Training Operator, Argo or KFP backend runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pytorchjob_crd import pytorchjob_crd

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "tests" / "cluster" / "k8s"
RUN_DIR = Path("/tmp/resume-ner-k8s")  # short: the kubelet's and dockershim's socket paths live under it
FIGURES: dict[str, str] = {}
MODES = {"kfp-standalone": "kubeflow", "kfp-multi-user": "kubeflow-user-example-com"}  # namespace of each


def _run(command: list[str], env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                    f"{done.stderr[-3000:]}")
    return done


def _engine_answers(env: dict[str, str]) -> bool:
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "version"], env=env, capture_output=True,
                                                 timeout=60).returncode == 0


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    """The environment of kubectl and docker commands against the running cluster (KUBECONFIG, DOCKER_HOST)."""
    if os.geteuid() != 0:
        pytest.fail("the cluster tier runs an API server, a kubelet and dockerd: run it as root")
    if shutil.which("kubectl") is None:
        pytest.fail("the cluster tier drives the cluster with kubectl (1.21 or later, for kustomize's `labels`)")
    env = dict(os.environ)
    started = time.monotonic()
    binaries = _run([K8S / "build.sh"], env).stdout.strip().splitlines()[-1]
    FIGURES["kubernetes build"] = f"{time.monotonic() - started:.0f}s"
    engine_started = not _engine_answers(env)
    if engine_started:
        env["DOCKER_HOST"] = _run([REPO / "images" / "dockerd.sh", "start"], env).stdout.strip().splitlines()[-1]
    subprocess.run([str(K8S / "down.sh"), str(RUN_DIR)], env=env, capture_output=True, timeout=120)  # leftovers
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    started = time.monotonic()
    try:
        env["KUBECONFIG"] = _run([K8S / "up.sh", binaries, RUN_DIR], env, timeout=300).stdout.strip().splitlines()[-1]
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


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """``kubectl ARGS`` against the tier's cluster; with ``check``, a failure fails the test with its output."""
    done = subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def wait_for(condition, timeout: float = 120, every: float = 1.0) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture(scope="session")
def tier_figures() -> dict[str, str]:
    """What the tier measured, printed at its end."""
    return FIGURES


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.write_line("cluster tier: " + "; ".join(f"{k} {v}" for k, v in FIGURES.items()))
