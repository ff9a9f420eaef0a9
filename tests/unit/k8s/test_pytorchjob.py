"""The PyTorchJob of multi-node final training: the manifest is valid for the Training Operator (strict JSON Schema
of the kubeflow.org/v1 CRD, pod templates strict against Kubernetes core/v1), carries the pipeline settings and no
secret value; submission against the FAKE Kubernetes API (support/fake_k8s_api.py) succeeds, fails and times out the way
a user reads it; ``resume-ner k8s pytorchjob render`` prints such a manifest."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client
from support.fake_k8s_api import JOBS, FakeKubernetesApi
from support.pytorchjob_schema import SCHEMA, assert_valid

from resume_ner.cli import k8s_commands
from resume_ner.cli.main import common_parent
from resume_ner.config import load
from resume_ner.errors import ConfigError, ResumeNerError
from resume_ner.k8s.pytorchjob import build_pytorchjob, render_pytorchjob_yaml, submit_pytorchjob_and_wait

ARGS = ["--data-asset", "/mnt/resume-ner/data", "--output-dir", "/mnt/resume-ner/runs/final"]
NAMESPACE = "resume-ner"
network = pytest.mark.network


def _config(*overrides: str):
    return load(None, list(overrides))


def _job(config=None, **kwargs: Any) -> dict[str, Any]:
    settings = {"name": "resume-ner-final-train", "namespace": NAMESPACE, "replicas": 3, "args": ARGS} | kwargs
    return build_pytorchjob(config or _config(), **settings)


def _pod(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]


def _container(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    return _pod(job, replica)["containers"][0]


def test_schema_is_strict_and_rejects_what_the_operator_rejects():
    job = _job()
    assert_valid(job)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    bad = [
        {**job, "spec": {**job["spec"], "pytorchReplicaSpecs": {**job["spec"]["pytorchReplicaSpecs"],
                                                                "Chief": {"template": {"spec": {"containers": []}}}}}},
        {**job, "spec": {**job["spec"], "runPolicy": {"cleanPodPolicy": "Always"}}},
        {**job, "spec": {**job["spec"], "nprocPerNode": 2}},
        {**job, "spec": {**job["spec"], "unknown": True}},
        {**job, "metadata": {"name": "1-starts-with-a-digit"}},
    ]
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]
    bad.append({**job, "spec": {**job["spec"], "pytorchReplicaSpecs": {"Master": {**master, "replicas": 2}}}})
    bad.append({**job, "spec": {**job["spec"], "pytorchReplicaSpecs": {"Master": master},
                                "elasticPolicy": {"minReplicas": 1, "maxReplicas": 2}}})
    for manifest in bad:
        assert not validator.is_valid(manifest)


def test_master_and_workers_run_torchrun_on_the_training_entrypoint():
    job = _job(replicas=3, nproc_per_node=2, gpus_per_replica=2, image="acr.io/resume-ner:1.2.0")
    assert_valid(job)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert job["spec"]["nprocPerNode"] == "2"
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 2, "ttlSecondsAfterFinished": 86400}
    container = _container(job, "Worker")
    assert container["name"] == "pytorch"
    assert container["image"] == "acr.io/resume-ner:1.2.0"
    assert container["command"] == ["torchrun"]
    assert container["args"] == ["-m", "resume_ner.cli.train", *ARGS]
    assert _pod(job)["serviceAccountName"] == "resume-ner-trainer"  # pipeline.job_service_account
    assert _pod(job)["automountServiceAccountToken"] is False
    labels = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/name": "resume-ner", "app.kubernetes.io/component": "final-train"}
    assert "&id" not in render_pytorchjob_yaml(job)  # the replicas' pods are written out in full


def test_a_single_replica_has_no_worker_and_the_image_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RESUME_NER_IMAGE", "acr.io/resume-ner:env")
    job = _job(replicas=1, ttl_seconds_after_finished=None)
    assert_valid(job)
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert _container(job)["image"] == "acr.io/resume-ner:env"
    assert "ttlSecondsAfterFinished" not in job["spec"]["runPolicy"]


def test_gpus_bring_the_accelerator_limit_node_selector_and_tolerations_of_the_config():
    config = _config("pipeline.gpu_accelerator=amd.com/gpu", "pipeline.gpu_node_selector={pool: a100}",
                     "pipeline.resources={final_train: {cpu_request: '2', cpu_limit: '3', memory_request: 8Gi, "
                     "memory_limit: 12Gi}}")
    job = _job(config, gpus_per_replica=2, nproc_per_node="gpu")
    assert_valid(job)
    for replica in ("Master", "Worker"):
        pod = _pod(job, replica)
        assert pod["nodeSelector"] == {"pool": "a100"}
        assert pod["tolerations"] == [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
        assert pod["containers"][0]["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"},
                                                     "limits": {"cpu": "3", "memory": "12Gi", "amd.com/gpu": "2"}}


@pytest.mark.parametrize("gpus, overrides", [(0, []), (1, ["pipeline.gpu=false"])])
def test_no_gpu_settings_without_gpus_or_with_gpu_off(gpus, overrides):
    job = _job(_config(*overrides), gpus_per_replica=gpus)
    assert_valid(job)
    pod = _pod(job)
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert set(pod["containers"][0]["resources"]["limits"]) == {"cpu", "memory"}


def test_secrets_are_references_never_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "planted-s3cret")
    job = _job(env={"EXTRA": "1"})
    assert_valid(job)
    assert "planted-s3cret" not in json.dumps(job) and "planted-s3cret" not in render_pytorchjob_yaml(job)
    env = {entry["name"]: entry for entry in _container(job)["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "resume-ner-mlflow", "key": "password", "optional": True}}}
    assert env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"]["key"] == "username"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.resume-ner.svc.cluster.local:5000"
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and env["EXTRA"]["value"] == "1"
    no_secret = _job(_config("pipeline.mlflow_secret=null", "tracking.tracking_uri=http://mlflow:5000"))
    names = {entry["name"]: entry for entry in _container(no_secret)["env"]}
    assert not any("valueFrom" in entry for entry in names.values())
    assert names["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"


def test_the_pods_log_where_the_launching_step_logs(monkeypatch):
    """The pods' MLFLOW_TRACKING_URI follows the launching step's rule (given_tracking_uri): a --set (the pipeline's
    mlflow_uri parameter) > the environment > the config files > pipeline.mlflow_uri."""

    def pod_uri(config) -> str:
        return {entry["name"]: entry for entry in _container(_job(config))["env"]}["MLFLOW_TRACKING_URI"]["value"]

    assert pod_uri(_config()) == "http://mlflow.resume-ner.svc.cluster.local:5000"  # the pipeline's default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert pod_uri(_config()) == "http://from-env:5000"
    assert pod_uri(_config("tracking.tracking_uri=http://typed:5000")) == "http://typed:5000"


def test_pods_run_unprivileged_with_shared_memory_tmp_and_the_volume():
    job = _job(_config("pipeline.volume_claim=resume-ner-data"))
    assert_valid(job)
    pod = _pod(job)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory"}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {}
    assert volumes[mounts["/mnt/resume-ner"]]["persistentVolumeClaim"] == {"claimName": "resume-ner-data"}
    assert "/mnt/resume-ner" not in {m["mountPath"] for m in _container(_job())["volumeMounts"]}


def test_elastic_policy():
    job = _job(replicas=3, elastic=(2, 4), backoff_limit=5)
    assert_valid(job)
    assert job["spec"]["elasticPolicy"] == {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d",
                                            "maxRestarts": 5}
    assert "elasticPolicy" not in _job()["spec"]


@pytest.mark.parametrize("kwargs, expected", [
    ({"replicas": 0}, "replicas 0"),
    ({"name": "Final_Train"}, "DNS-1035"),
    ({"name": "a" * 60}, "too long"),
    ({"namespace": "Resume NER"}, "namespace"),
    ({"nproc_per_node": 0}, "nproc_per_node 0"),
    ({"nproc_per_node": "many"}, "nproc_per_node 'many'"),
    ({"nproc_per_node": "gpu", "gpus_per_replica": 0}, "pods get none"),
    ({"nproc_per_node": 4, "gpus_per_replica": 2}, "own GPU"),
    ({"elastic": (3, 2)}, "min <= max"),
    ({"elastic": (0, 2), "replicas": 2}, "1 <= min"),
    ({"elastic": (4, 6)}, "within min..max"),
    ({"elastic": (1, 2), "replicas": 1}, "Worker"),
    ({"clean_pod_policy": "Always"}, "clean_pod_policy"),
    ({"backoff_limit": -1}, "backoff_limit"),
])
def test_invalid_inputs_are_config_errors(kwargs, expected):
    with pytest.raises(ConfigError, match="invalid PyTorchJob") as error:
        _job(**kwargs)
    assert expected in str(error.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        _job(replicas=0, name="X", clean_pod_policy="x")
    assert all(part in str(error.value) for part in ("replicas 0", "name 'X'", "clean_pod_policy 'x'"))


@pytest.fixture
def api():
    with FakeKubernetesApi() as fake:
        yield fake


def _submit(fake: FakeKubernetesApi, job: dict[str, Any] | None = None, **kwargs: Any):
    settings = {"namespace": NAMESPACE, "poll_interval_s": 0.01, "timeout_s": 10} | kwargs
    with client.ApiClient(client.Configuration(host=fake.url)) as api_client:
        return submit_pytorchjob_and_wait(job or _job(), api_client=api_client, **settings)


@network
def test_a_succeeded_job_returns_its_result_and_is_deleted(api, caplog):
    caplog.set_level(logging.INFO, logger="resume_ner.k8s.pytorchjob")
    result = _submit(api)
    assert (result.name, result.namespace, result.state) == ("resume-ner-final-train", NAMESPACE, "Succeeded")
    assert [c["type"] for c in result.conditions] == ["Created", "Running", "Succeeded"]
    assert result.failed_replica is None and "successfully completed" in result.message and result.seconds >= 0
    (create,) = api.requests_to("POST", JOBS.replace("(?P<ns>[^/]+)", NAMESPACE))
    assert create.json["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert api.deleted == [(NAMESPACE, "resume-ner-final-train")]
    logged = caplog.text
    assert logged.index(": Created") < logged.index(": Running") < logged.index(": Succeeded")


@network
def test_cleanup_never_keeps_the_job_and_transient_read_failures_are_retried(api):
    api.fail_next_gets = 2
    assert _submit(api, cleanup="never").state == "Succeeded"
    assert api.deleted == [] and (NAMESPACE, "resume-ner-final-train") in api.jobs


@network
def test_a_failed_job_names_the_replica_the_message_and_the_log_tail(api):
    api.outcome = "Failed"
    with pytest.raises(ResumeNerError) as error:
        _submit(api)
    message = str(error.value)
    assert "PyTorchJob resume-ner/resume-ner-final-train failed: replica Worker failed" in message
    assert "because 1 Worker replica(s) failed" in message
    assert "pod resume-ner-final-train-worker-0" in message
    assert "RuntimeError: planted failure in the training step" in message
    assert "worker-0 log line 059" in message and "worker-0 log line 005" not in message  # the last 50 lines
    (listing,) = api.requests_to("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
    assert listing.query["labelSelector"] == ("training.kubeflow.org/job-name=resume-ner-final-train,"
                                              "training.kubeflow.org/replica-type=worker")
    assert api.deleted == []  # on-success: the failed job and its pods stay for inspection
    assert "kubectl describe pytorchjob resume-ner-final-train -n resume-ner" in message


@network
def test_a_failed_job_is_deleted_with_cleanup_always(api):
    api.outcome = "Failed"
    api.failed_replica = "Master"
    with pytest.raises(ResumeNerError, match="replica Master failed"):
        _submit(api, cleanup="always")
    assert api.deleted == [(NAMESPACE, "resume-ner-final-train")]


@network
@pytest.mark.parametrize("cleanup, deleted", [("on-success", False), ("always", True)])
def test_a_job_that_does_not_finish_times_out(api, cleanup, deleted):
    api.outcome = "Running"
    with pytest.raises(ResumeNerError, match=r"did not finish within 0.3 s \(last state: Running\)") as error:
        _submit(api, timeout_s=0.3, poll_interval_s=0.05, cleanup=cleanup)
    assert bool(api.deleted) is deleted
    assert ("kubectl delete pytorchjob" in str(error.value)) is not deleted


@network
def test_an_existing_job_is_a_conflict_with_what_to_do(api):
    _submit(api, cleanup="never")
    with pytest.raises(ResumeNerError, match="already exists: delete it .kubectl delete pytorchjob "
                                             "resume-ner-final-train -n resume-ner. or pick another name"):
        _submit(api)


@network
def test_rbac_refusal_says_which_permissions_are_missing(api):
    api.deny_status = 403
    with pytest.raises(ResumeNerError, match="403 Forbidden.*RBAC.*create, get and delete on pytorchjobs"):
        _submit(api)


@network
def test_a_kube_context_of_the_kubeconfig_is_used(api, tmp_path, monkeypatch):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}},
                     {"name": "other", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}},
                     {"name": "other", "context": {"cluster": "other", "user": "me"}}],
    }))
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    result = submit_pytorchjob_and_wait(_job(), namespace=NAMESPACE, kube_context="fake", poll_interval_s=0.01)
    assert result.state == "Succeeded"
    with pytest.raises(ConfigError, match="no Kubernetes credentials for kube context 'missing'"):
        submit_pytorchjob_and_wait(_job(), namespace=NAMESPACE, kube_context="missing")


def test_an_unreachable_api_server_is_named():
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    with client.ApiClient(configuration) as unreachable, pytest.raises(
            ResumeNerError, match="cannot reach the Kubernetes API server at http://127.0.0.1:9"):
        submit_pytorchjob_and_wait(_job(), namespace=NAMESPACE, api_client=unreachable)


def test_invalid_submissions_are_config_errors():
    with pytest.raises(ConfigError, match="cleanup 'sometimes'") as error:
        submit_pytorchjob_and_wait(_job(), namespace="other", cleanup="sometimes", api_client=object())
    assert "metadata.namespace 'resume-ner' differs from namespace 'other'" in str(error.value)


def _render(argv: list[str], capsys) -> tuple[dict[str, Any], str]:
    parser = argparse.ArgumentParser(prog="resume-ner")
    k8s_commands.register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    args = parser.parse_args(["k8s", "pytorchjob", "render", *argv])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    return yaml.safe_load(captured.out), captured.err


def test_render_prints_a_valid_manifest_with_the_default_training_arguments(capsys):
    job, err = _render(["--replicas", "3", "--set", "pipeline.volume_claim=resume-ner-data",
                        "--set", "training.epochs=5", "--elastic", "2:4"], capsys)
    assert_valid(job)
    assert job["metadata"] == {"name": "resume-ner-final-train", "namespace": "kubeflow",
                               "labels": {"app.kubernetes.io/name": "resume-ner",
                                          "app.kubernetes.io/component": "final-train"}}
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert job["spec"]["elasticPolicy"]["minReplicas"] == 2
    container = _container(job)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # pipeline.gpu_count
    assert container["args"] == [
        "-m", "resume_ner.cli.train", "--config-dir", "/mnt/resume-ner/config",
        "--data-asset", "/mnt/resume-ner/data", "--output-dir", "/mnt/resume-ner/runs/final",
        "--set", "training.device=cuda", "--set", "pipeline.volume_claim=resume-ner-data",
        "--set", "training.epochs=5"]
    assert err == ""


def test_render_passes_arguments_after_double_dash_verbatim(capsys):
    job, err = _render(["--gpus", "0", "--nproc-per-node", "auto", "--image", "acr.io/r:2", "--",
                        "--data-asset", "/data/x.jsonl", "--output-dir", "/out", "--no-tracking"], capsys)
    assert_valid(job)
    container = _container(job)
    assert container["args"][2:] == ["--data-asset", "/data/x.jsonl", "--output-dir", "/out", "--no-tracking"]
    assert container["image"] == "acr.io/r:2" and job["spec"]["nprocPerNode"] == "auto"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "pipeline.volume_claim is not set" in err


def test_render_refuses_both_ways_of_giving_training_arguments(capsys):
    parser = argparse.ArgumentParser(prog="resume-ner")
    k8s_commands.register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    args = parser.parse_args(["k8s", "pytorchjob", "render", "--data-asset", "/d", "--", "--output-dir", "/o"])
    with pytest.raises(ConfigError, match="--data-asset and training arguments after `--` exclude each other"):
        args.func(args)


def test_the_example_pytorchjob_of_the_manifests_is_valid():
    example = Path(__file__).resolve().parents[3] / "manifests" / "examples" / "pytorchjob.yaml"
    [job] = [doc for doc in yaml.safe_load_all(example.read_text()) if doc]
    assert_valid(job)
