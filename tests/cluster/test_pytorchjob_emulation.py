"""Multi-node final training, with the Training Operator EMULATED (no operator runs here): the PyTorchJob the project
renders (resume_ner.k8s.pytorchjob.build_pytorchjob) is admitted by the CRD, then its Master and Worker pods are
made as the operator v1.9.0 makes them, and run as two real pods of the CPU image that finish a gloo DDP training
with one MLflow run and one model.

What the emulation does, from kubeflow/training-operator at tag v1.9.0:
- pod names ``<job>-<type>-<index>`` (pytorch/envvar.go: replicaName), the template's labels plus the operator's
  (common/job_controller.go: GenLabels; common/pod.go:402-421: replica type, index, job role of the master), the
  replica's restartPolicy (common/pod.go:435) and an owner reference to the job (common/pod.go:454);
- the environment of pytorch/envvar.go: setPodEnv (PYTHONUNBUFFERED, MASTER_PORT / PET_MASTER_PORT and
  MASTER_ADDR / PET_MASTER_ADDR from pytorch/master.go, WORLD_SIZE = replicas x nprocPerNode, RANK and
  PET_NODE_RANK (workers from 1), PET_NPROC_PER_NODE, PET_NNODES), appended to every container in that order;
- a headless Service per replica, named like its pod.
Left out: the worker's init container (pytorch/initcontainer.go) waits for the master's name with ``nslookup``, and
there is no cluster DNS here. Patched for this machine (conftest.on_this_machine): host network, the master's and
MLflow's names in /etc/hosts, and the worker's port declaration dropped (with hostNetwork a containerPort is a host
port, and both replicas share this one node).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time

import pytest
from support.cluster import REPO, host_path_volume, kubectl, node_ip, on_this_machine, wait_for

NAMESPACE = "kubeflow"  # the pipeline's (kfp-standalone), where the volume resume-ner-data is
JOB = "ddp-emulated"
EXPERIMENT = "cluster-tier-ddp"
OPERATOR = "pytorchjob-controller"  # pytorch/pytorchjob_controller.go:59
SMALL = ("pipeline.resources={hpo_trial: {cpu_request: 500m, cpu_limit: '1', memory_request: 1Gi, "
         "memory_limit: 3Gi}, final_train: {cpu_request: 500m, cpu_limit: '1', memory_request: 1Gi, "
         "memory_limit: 3Gi}}")  # two replicas on this machine's 2 cores


def operator_pods(job: dict) -> list[dict]:
    """The pods the Training Operator v1.9.0 creates for ``job`` (see the module's docstring), in replica order."""
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    total = sum(r["replicas"] for r in replicas.values())
    nproc = spec.get("nprocPerNode")
    world_size = total * (int(nproc) if nproc and nproc.isdigit() else 1)
    master = f"{job['metadata']['name']}-master-0"
    port = next(p["containerPort"] for c in replicas["Master"]["template"]["spec"]["containers"]
                if c["name"] == "pytorch" for p in c["ports"] if p["name"] == "pytorchjob-port")
    pods = []
    for rtype in ("Master", "Worker"):
        for index in range(replicas.get(rtype, {}).get("replicas", 0)):
            template = copy.deepcopy(replicas[rtype]["template"])
            labels = {**template["metadata"].get("labels", {}),
                      "training.kubeflow.org/operator-name": OPERATOR,
                      "training.kubeflow.org/job-name": job["metadata"]["name"],
                      "training.kubeflow.org/replica-type": rtype.lower(),
                      "training.kubeflow.org/replica-index": str(index)}
            if rtype == "Master":
                labels["training.kubeflow.org/job-role"] = "master"
            rank = index + 1 if rtype == "Worker" else index
            env = [("PYTHONUNBUFFERED", "1"), ("MASTER_PORT", str(port)), ("PET_MASTER_PORT", str(port)),
                   ("MASTER_ADDR", master), ("PET_MASTER_ADDR", master), ("WORLD_SIZE", str(world_size)),
                   ("RANK", str(rank)), ("PET_NODE_RANK", str(rank))]
            if nproc is not None:
                env.append(("PET_NPROC_PER_NODE", nproc))
            env.append(("PET_NNODES", str(total)))
            for container in template["spec"]["containers"]:
                container.setdefault("env", []).extend({"name": k, "value": v} for k, v in env)
            template["spec"]["restartPolicy"] = replicas[rtype]["restartPolicy"]
            name = f"{job['metadata']['name']}-{rtype.lower()}-{index}"
            template["metadata"].update(name=name, namespace=job["metadata"]["namespace"], labels=labels,
                                        ownerReferences=[{"apiVersion": job["apiVersion"], "kind": job["kind"],
                                                          "name": job["metadata"]["name"],
                                                          "uid": job["metadata"]["uid"], "controller": True,
                                                          "blockOwnerDeletion": True}])
            pods.append({"apiVersion": "v1", "kind": "Pod", **template})
    return pods


def replica_service(pod: dict) -> dict:
    """The headless Service the operator makes for a replica: the pod's name, selecting it by the operator's labels."""
    labels = pod["metadata"]["labels"]
    selector = {k: v for k, v in labels.items() if k.startswith("training.kubeflow.org/")
                and k != "training.kubeflow.org/job-role"}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
                         "ownerReferences": pod["metadata"]["ownerReferences"]},
            "spec": {"clusterIP": "None", "selector": selector,
                     "ports": [{"name": "pytorchjob-port", "port": 23456, "targetPort": 23456}]}}


@pytest.fixture(scope="module")
def finished_job(services, image, tier_figures) -> dict:
    from resume_ner.config import load
    from resume_ner.k8s.pytorchjob import build_pytorchjob

    env = services["env"]
    volume = host_path_volume(env, NAMESPACE, "resume-ner-data", 10001)
    made = subprocess.run([sys.executable, "-m", "resume_ner.cli.main", "data", "synth", "--n", "24", "--seed", "7",
                           "--output-dir", str(volume / "data")], capture_output=True, text=True, cwd=REPO)
    assert made.returncode == 0, made.stderr
    for root, dirs, files in os.walk(volume):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), 10001, 10001)
    config = load(REPO / "config", [SMALL, "pipeline.volume_claim=resume-ner-data",
                                    f"pipeline.mlflow_uri={services['in_cluster_url']}"])
    mount = config.pipeline.volume_mount_path
    job = build_pytorchjob(config, name=JOB, namespace=NAMESPACE, replicas=2, nproc_per_node=1, image=image,
                           args=["--data-asset", f"{mount}/data", "--output-dir", f"{mount}/runs/{JOB}",
                                 "--set", "training.epochs=1", "--set", "model.max_length=64",
                                 "--set", "model.stride=16", "--set", f"tracking.experiment_name={EXPERIMENT}"])
    kubectl(env, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(job))
    created = json.loads(kubectl(env, "create", "-f", "-", "-o", "json", stdin=json.dumps(job)).stdout)
    aliases = {f"{JOB}-master-0": node_ip(env), "mlflow.resume-ner.svc.cluster.local": services["cluster_ip"]}
    started = time.monotonic()
    pods = operator_pods(created)
    for pod in pods:
        pod["spec"].update(on_this_machine(aliases))
        for container in pod["spec"]["containers"]:
            container["imagePullPolicy"] = "Never"
            if pod["metadata"]["labels"]["training.kubeflow.org/replica-type"] == "worker":
                container.pop("ports", None)
        kubectl(env, "apply", "-f", "-", stdin=json.dumps(replica_service(pod)))
        kubectl(env, "apply", "-f", "-", stdin=json.dumps(pod))
    names = [p["metadata"]["name"] for p in pods]

    def phases() -> list[str]:
        return [kubectl(env, "get", "pod", n, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}").stdout for n in names]

    wait_for(lambda: set(phases()) <= {"Succeeded", "Failed"}, timeout=900, every=3)
    logs = {n: kubectl(env, "logs", n, "-n", NAMESPACE, "--tail=60", check=False).stdout for n in names}
    if phases() != ["Succeeded", "Succeeded"]:
        pytest.fail(f"the emulated replicas ended {phases()}:\n" + "\n".join(f"--- {n}\n{t}" for n, t in logs.items()))
    tier_figures["emulated PyTorchJob (2 pods)"] = f"{time.monotonic() - started:.0f}s"
    return {"pods": pods, "logs": logs, "output": volume / "runs" / JOB, "created": created}


def test_the_rendered_pytorchjob_is_admitted_and_its_replicas_get_the_operators_environment(finished_job):
    master, worker = finished_job["pods"]
    def env_of(pod: dict) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env_of(master)["RANK"] == "0" and env_of(worker)["RANK"] == "1"
    assert env_of(master)["WORLD_SIZE"] == env_of(worker)["WORLD_SIZE"] == "2"
    assert env_of(worker)["PET_MASTER_ADDR"] == f"{JOB}-master-0" and env_of(worker)["PET_NNODES"] == "2"
    assert finished_job["created"]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1


def test_two_pods_finish_one_ddp_training_with_one_mlflow_run_and_one_model(services, finished_job):
    from mlflow.tracking import MlflowClient

    master, worker = (finished_job["logs"][f"{JOB}-{kind}-0"] for kind in ("master", "worker"))
    logs = f"--- master\n{master[-2500:]}\n--- worker\n{worker[-2500:]}"
    assert "x 2 process(es)" in master, logs  # one process group across the two pods
    assert "MLflow run:" in master and "MLflow run:" not in worker, logs  # rank 0 alone tracks
    client = MlflowClient(services["local_url"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, logs[-3000:]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.run_id, r.info.status) for r in runs]
    output = finished_job["output"]  # rank 0 alone writes: one model, one checkpoint of its one epoch
    assert (output / "model" / "model.safetensors").is_file(), sorted(output.rglob("*"))
    assert len(list((output / "checkpoints").iterdir())) == 1, sorted((output / "checkpoints").iterdir())
