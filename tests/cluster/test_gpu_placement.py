"""GPU placement by a real scheduler: the pods the pipeline's training tasks get (the pod fields of the KFP driver
EMULATION, tests/support/kfp_backend_emulation.py, fed the real plan_run) on a node labelled and tainted like an
AKS GPU pool, with nvidia.com/gpu capacity patched into its status: with gpu_count=1 they wait for such a node and
land there with their GPU limit; with gpu_count=0 they ask for none and never need one."""

from __future__ import annotations

import json

import pytest
from support.cluster import REPO, kubectl, wait_for

from support.pipeline_pods import TRIAL, emulated_run, read_compiled

NAMESPACE = "kubeflow"
TINY = ("pipeline.resources={hpo_trial: {cpu_request: 100m, cpu_limit: 200m, memory_request: 64Mi, "
        "memory_limit: 128Mi}, final_train: {cpu_request: 100m, cpu_limit: 200m, memory_request: 64Mi, "
        "memory_limit: 128Mi}}")  # the pods, not the node's 2 cores, are under test


@pytest.fixture(scope="module")
def emulated_pods(tmp_path_factory, monkeypatch_module) -> dict[int, dict]:
    """The hpo-trial pod fields of runs with gpu_count 1 and 0, of a pipeline compiled with tiny requests."""
    from resume_ner.config import load
    from resume_ner.kfp.pipelines import compile_all

    out = tmp_path_factory.mktemp("compiled")
    monkeypatch_module.delenv("RESUME_NER_IMAGE", raising=False)
    compile_all(out, load(REPO / "config", [TINY]))
    spec, platform = read_compiled(out / "pipelines" / "resume_ner_training.yaml")
    data = out / "resumes.jsonl"
    data.write_text('{"text": "Jane Doe", "labels": [[0, 8, "Name"]]}\n')
    return {gpus: emulated_run(spec, platform, {"data_uri": str(data), "gpu_count": gpus}, monkeypatch_module)
            [f"{TRIAL[-1]}-0"] for gpus in (1, 0)}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _pod(name: str, fields: dict, *, tolerations: bool = True) -> str:
    """A pod with the emulated fields that matter to the scheduler (image: the pause binary, no volumes)."""
    spec = {"containers": [{"name": "main", "image": "k8s.gcr.io/pause:3.2", "imagePullPolicy": "Never",
                            "resources": fields["resources"]}],
            "nodeSelector": fields["nodeSelector"], "tolerations": fields["tolerations"] if tolerations else []}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
                       "spec": spec})


def _phase(env: dict[str, str], name: str) -> str:
    return kubectl(env, "get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}").stdout


def placement_problem(env: dict[str, str], name: str) -> str:
    """Why the scheduler keeps ``name`` Pending (its PodScheduled message), "" once it is scheduled."""
    pod = json.loads(kubectl(env, "get", "pod", name, "-n", NAMESPACE, "-o", "json").stdout)
    scheduled = [c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"]
    return "" if scheduled and scheduled[0]["status"] == "True" else (scheduled[0].get("message", "not yet")
                                                                    if scheduled else "not yet")


def test_training_pods_land_on_the_gpu_pool_with_their_limit_and_need_it_only_with_gpus(applied, emulated_pods):
    env = applied
    assert emulated_pods[1]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in emulated_pods[0]["resources"]["limits"]
    kubectl(env, "apply", "-f", "-", stdin=_pod("trial-gpus-1", emulated_pods[1]))
    kubectl(env, "apply", "-f", "-", stdin=_pod("trial-gpus-0", emulated_pods[0]))
    try:
        # a plain node (no GPU pool): the CPU pod runs, the GPU pod waits for the pool
        # the kubelet starts the image's container: minutes on a loaded 2-core machine (a previous run missed 120 s)
        assert wait_for(lambda: _phase(env, "trial-gpus-0") == "Running", timeout=300), \
            f"the CPU pod is {_phase(env, 'trial-gpus-0')!r}, not Running, after 300 s: " + kubectl(
                env, "describe", "pod", "trial-gpus-0", "-n", NAMESPACE, check=False).stdout[-1500:]
        assert wait_for(lambda: "didn't match" in placement_problem(env, "trial-gpus-1"), timeout=60), \
            placement_problem(env, "trial-gpus-1")
        # the node becomes an AKS GPU node: label, taint, GPU capacity
        kubectl(env, "label", "node", "localhost", "kubernetes.azure.com/accelerator=nvidia")
        kubectl(env, "taint", "node", "localhost", "sku=gpu:NoSchedule")
        kubectl(env, "patch", "node", "localhost", "--subresource=status", "--type=json", "-p",
                '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"}]')
        assert wait_for(lambda: _phase(env, "trial-gpus-1") == "Running", timeout=180), \
            placement_problem(env, "trial-gpus-1")
        pod = json.loads(kubectl(env, "get", "pod", "trial-gpus-1", "-n", NAMESPACE, "-o", "json").stdout)
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["spec"]["nodeName"] == "localhost"
        # without the pool's toleration a pod is kept off it, and the check names the taint
        kubectl(env, "apply", "-f", "-", stdin=_pod("trial-no-toleration", emulated_pods[1], tolerations=False))
        assert wait_for(lambda: "taint" in placement_problem(env, "trial-no-toleration"), timeout=60)
        assert "sku: gpu" in placement_problem(env, "trial-no-toleration")
    finally:
        kubectl(env, "delete", "pod", "--all", "-n", NAMESPACE, "--wait=false", check=False)
        kubectl(env, "taint", "node", "localhost", "sku=gpu:NoSchedule-", check=False)
        kubectl(env, "label", "node", "localhost", "kubernetes.azure.com/accelerator-", check=False)
