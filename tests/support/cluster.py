"""Helpers of the cluster tier (tests/cluster): kubectl against the tier's cluster, polling, and the patches every
workload needs on this machine (no pod network, no cluster DNS, no storage provisioner)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "tests" / "cluster" / "k8s"  # build.sh, up.sh, down.sh, postgres-image.sh
RUN_DIR = Path("/tmp/resume-ner-k8s")  # short: the kubelet's and dockershim's socket paths live under it
POSTGRES_IMAGE = "resume-ner-postgres:bookworm"  # the stand-in for postgres:16.10-bookworm (k8s/postgres-image.sh)
MODES = {"kfp-standalone": "kubeflow", "kfp-multi-user": "kubeflow-user-example-com"}  # namespace of each


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


def node_ip(env: dict[str, str]) -> str:
    """The node's InternalIP: the address of every hostNetwork pod."""
    addresses = json.loads(kubectl(env, "get", "node", "localhost", "-o", "jsonpath={.status.addresses}").stdout)
    return next(a["address"] for a in addresses if a["type"] == "InternalIP")


def host_path_volume(env: dict[str, str], namespace: str, claim: str, owner: int) -> Path:
    """A hostPath PersistentVolume bound to the claim ``namespace/claim`` (its class, modes and size), owned by
    ``owner``: what the cluster's storage provisioner and the pod's fsGroup would give (no CSI driver here, and
    fsGroup does not apply to hostPath). Its directory on this machine."""
    pvc = json.loads(kubectl(env, "get", "pvc", claim, "-n", namespace, "-o", "json").stdout)["spec"]
    directory = RUN_DIR / "volumes" / namespace / claim
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, owner, owner)
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-{claim}"},
              "spec": {"capacity": {"storage": pvc["resources"]["requests"]["storage"]},
                       "accessModes": pvc["accessModes"], "storageClassName": pvc.get("storageClassName", ""),
                       "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(directory)},
                       "claimRef": {"namespace": namespace, "name": claim}}}
    kubectl(env, "apply", "-f", "-", stdin=json.dumps(volume))
    assert wait_for(lambda: kubectl(env, "get", "pvc", claim, "-n", namespace, "-o",
                                    "jsonpath={.status.phase}").stdout == "Bound", timeout=60), f"{claim} unbound"
    return directory


def on_this_machine(aliases: dict[str, str]) -> dict:
    """The pod-spec fields every workload here needs: the host's network (no pod network) and ``aliases`` (host
    name -> IP) in /etc/hosts (no cluster DNS). Images come from the local engine: ``imagePullPolicy: Never``."""
    return {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet",
            "hostAliases": [{"ip": ip, "hostnames": [name]} for name, ip in aliases.items()]}
