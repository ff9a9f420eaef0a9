"""The services of manifests/aks for real: PostgreSQL (the MLflow backend store and the Optuna database) and the
MLflow tracking server become Ready, and a Job of the project image, in the pipeline's namespace and as its
trainer account, trains on synthetic resumes and logs to MLflow through the Service's cluster IP (kube-proxy).

What is patched for this machine, and why (conftest.py, ``services``):
- images: the MLflow server runs from the project image (ghcr.io/mlflow/mlflow is out of reach; the project image
  has the same mlflow, with psycopg2), PostgreSQL from a Debian-built STAND-IN for postgres:16.10-bookworm
  (tests/cluster/k8s/postgres-image.sh, PostgreSQL 15), both ``imagePullPolicy: Never``;
- ``hostNetwork`` (no pod network here) and ``hostAliases`` for the Services' DNS names (no cluster DNS here);
- hostPath PersistentVolumes bound to the claims with their storage class (no disk CSI driver here).
Everything else, probes, security contexts, read-only root, Secrets, the server's arguments, is the manifests'.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from support.cluster import kubectl, node_ip, on_this_machine

NAMESPACE = "kubeflow"  # the pipeline's (kfp-standalone)
EXPERIMENT = "cluster-tier-job"
# Two trials of a study on the Optuna database, opened as the pipeline's tasks open it (the Secret's URL)
OPTUNA_TRIALS = ("import os, optuna; from resume_ner.config import HpoConfig; "
                 "from resume_ner.hpo.study import resolve_storage; "
                 "storage = resolve_storage(os.environ[\"RESUME_NER_OPTUNA_STORAGE\"], \"/tmp\", \"cluster-tier\", "
                 "HpoConfig(study_name=\"cluster-tier\")); "
                 "optuna.create_study(storage=storage, study_name=\"cluster-tier\")"
                 ".optimize(lambda t: t.suggest_float(\"x\", 0, 1), n_trials=2)")


def training_job(image: str, mlflow_ip: str, mlflow_url: str, postgres_ip: str) -> dict:
    """A Job that makes synthetic resumes, trains the packaged MiniLM on them for one epoch, logging to MLflow, and
    runs two Optuna trials on the study database of the Secret resume-ner-optuna-db."""
    script = ("resume-ner data synth --n 24 --seed 5 --output-dir /tmp/data && "
              "python3 -m resume_ner.cli.train --data-asset /tmp/data --output-dir /tmp/out "
              f"--set training.epochs=1 --set model.max_length=64 --set model.stride=16 "
              f"--set tracking.experiment_name={EXPERIMENT} && python3 -c '{OPTUNA_TRIALS}'")
    optuna_url = {"secretKeyRef": {"name": "resume-ner-optuna-db", "key": "url"}}
    container = {"name": "train", "image": image, "imagePullPolicy": "Never", "command": ["sh", "-ec", script],
                 "env": [{"name": "MLFLOW_TRACKING_URI", "value": mlflow_url}, {"name": "HF_HUB_OFFLINE", "value": "1"},
                         {"name": "RESUME_NER_OPTUNA_STORAGE", "valueFrom": optuna_url}],
                 "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
                                     "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                  {"name": "home", "mountPath": "/home/resume-ner"}]}
    host = mlflow_url.split("//")[1].split(":")[0]
    aliases = {host: mlflow_ip, "postgres.resume-ner.svc.cluster.local": postgres_ip}
    spec = {"serviceAccountName": "resume-ner-trainer", "automountServiceAccountToken": False,
            "restartPolicy": "Never", "containers": [container], **on_this_machine(aliases),
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-and-log", "namespace": NAMESPACE},
            "spec": {"backoffLimit": 0, "template": {"spec": spec}}}


@pytest.fixture(scope="module")
def finished_job(services, image, tier_figures) -> dict[str, str]:
    import time

    env = services["env"]
    started = time.monotonic()
    password = base64.b64decode(kubectl(env, "get", "secret", "resume-ner-postgres", "-n", "resume-ner", "-o",
                                        "jsonpath={.data.password}").stdout).decode()
    url = f"postgresql+psycopg2://postgres:{password}@postgres.resume-ner.svc.cluster.local:5432/optuna"
    kubectl(env, "create", "secret", "generic", "resume-ner-optuna-db", "-n", NAMESPACE, f"--from-literal=url={url}")
    job = training_job(image, services["cluster_ip"], services["in_cluster_url"], node_ip(env))
    kubectl(env, "apply", "-f", "-", stdin=json.dumps(job))
    done = kubectl(env, "wait", "--for=condition=complete", "job/train-and-log", "-n", NAMESPACE,
                   "--timeout=600s", check=False)
    logs = kubectl(env, "logs", "job/train-and-log", "-n", NAMESPACE, "--tail=40", check=False).stdout
    if done.returncode != 0:
        pytest.fail(f"the training Job did not complete: {done.stderr.strip()}\n{logs}")
    tier_figures["job training"] = f"{time.monotonic() - started:.0f}s"
    return {"logs": logs}


def test_the_services_are_ready_with_the_manifests_probes_and_users(services):
    env = services["env"]
    pods = json.loads(kubectl(env, "get", "pods", "-n", "resume-ner", "-o", "json").stdout)["items"]
    running = {p["metadata"]["labels"]["app.kubernetes.io/name"]: p for p in pods if p["status"]["phase"] == "Running"}
    assert set(running) == {"postgres", "mlflow"}
    for name, pod in running.items():
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", (name, pod["status"]["conditions"])
        container = pod["spec"]["containers"][0]
        assert container["readinessProbe"] and container["securityContext"]["allowPrivilegeEscalation"] is False
    assert running["mlflow"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert running["postgres"]["spec"]["securityContext"]["runAsUser"] == 999
    # the Optuna database of the init ConfigMap exists
    databases = kubectl(env, "exec", "-n", "resume-ner", "postgres-0", "--", "psql", "-U", "postgres", "-Atc",
                        "SELECT datname FROM pg_database").stdout.split()
    assert {"mlflow", "optuna"} <= set(databases)


def test_a_job_trains_and_logs_to_mlflow_through_its_service(services, finished_job):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(services["local_url"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, finished_job["logs"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", finished_job["logs"]
    metrics = runs[0].data.metrics
    assert "train_loss_epoch" in metrics and any(k.startswith("best_val_") for k in metrics), sorted(metrics)
    # the artifacts went through the server (--serve-artifacts) onto its volume
    stored = [p.relative_to(services["artifacts"]) for p in Path(services["artifacts"]).rglob("*") if p.is_file()]
    assert any(runs[0].info.run_id in p.parts for p in stored), stored[:20]


def test_the_job_ran_trials_on_the_optuna_database(services, finished_job):
    trials = kubectl(services["env"], "exec", "-n", "resume-ner", "postgres-0", "--", "psql", "-U", "postgres", "-d",
                     "optuna", "-Atc", "SELECT count(*) FROM trials WHERE state = 'COMPLETE'").stdout.strip()
    assert trials == "2", finished_job["logs"]
