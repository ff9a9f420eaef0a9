"""The pipeline's final_train with replicas > 1: a PyTorchJob with the GPU settings of the pipeline parameters,
run on the shared volume, waited for (against the FAKE Kubernetes API of fake_k8s_api.py), its model returned."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml
from fake_k8s_api import FakeKubernetesApi
from kubernetes import client
from test_pytorchjob import assert_valid

from resume_ner.config import load
from resume_ner.errors import ConfigError
from resume_ner.workflows.steps import final_pytorchjob, final_train_step, pipeline_config

REPO = Path(__file__).resolve().parents[3]
VOLUME = ["pipeline.volume_claim=resume-ner-data", "pipeline.volume_mount_path=/mnt/resume-ner"]


def _splits(tmp_path: Path) -> dict[str, Path]:
    from resume_ner.data.synth import generate_resumes

    splits = {}
    for index, split in enumerate(("train", "validation", "test")):
        path = tmp_path / "artifacts" / split
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(d.to_doccano()) for d in generate_resumes(3, index)) + "\n")
        splits[split] = path
    return splits


def test_the_job_carries_the_gpu_settings_of_the_pipeline_parameters(tmp_path):
    config = pipeline_config([*VOLUME, "tracking.tracking_uri=http://mlflow:5000"], gpu_count=2,
                             pipeline_run_id="run-42")
    job = final_pytorchjob(config, best_path=tmp_path / "best.json", data_dir=tmp_path / "data", work=tmp_path,
                           namespace="team-a", replicas=3, gpu_count=2, pipeline_run_id="run-42")

    assert_valid(job)
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 2)
    assert job["spec"]["nprocPerNode"] == "2" and job["metadata"]["namespace"] == "team-a"
    pod = specs["Worker"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"kubernetes.azure.com/accelerator": "nvidia"}
    assert pod["tolerations"] == [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert container["args"][:3] == ["-m", "resume_ner.cli.main", "final-train"]
    assert "--no-register" in container["args"]
    written = load(tmp_path / "config")  # the step's resolved config travels to the pods as a --config-dir
    assert written.training.device == "cuda" and written.tracking.tracking_uri == "http://mlflow:5000"


def test_the_compiled_pipeline_passes_its_replicas_and_gpu_count_to_final_train():
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "resume_ner_training.yaml").read_text()))
    task = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["final-train"]
    parameters = task["inputs"]["parameters"]
    assert parameters["replicas"]["componentInputParameter"] == "pipelinechannel--replicas"
    assert parameters["gpu_count"]["componentInputParameter"] == "pipelinechannel--gpu_count"


def test_several_replicas_need_the_shared_volume(tmp_path):
    with pytest.raises(ConfigError, match="shared volume"):
        final_train_step(pipeline_config([]), best_path=tmp_path / "b.json", splits={}, model_path=tmp_path / "m",
                         replicas=2, workspace=str(tmp_path))


@pytest.mark.network
def test_final_train_step_runs_the_job_and_returns_the_model_its_pods_wrote(tmp_path, monkeypatch):
    import resume_ner.k8s.pytorchjob as pytorchjob

    config = pipeline_config([*VOLUME, "tracking.enabled=false"], gpu_count=1)
    output = tmp_path / "ws" / "run-7" / "final" / "output"  # what the job's rank 0 writes on the volume
    (output / "model").mkdir(parents=True)
    (output / "model" / "model.safetensors").write_bytes(b"weights")
    (output / "train_result.json").write_text(json.dumps({"run_id": "abc123", "model_dir": str(output / "model")}))
    (output / "test_metrics.json").write_text(json.dumps({"f1_micro": 0.71, "f1_macro": 0.6}))
    monkeypatch.setenv("POD_NAMESPACE", "team-a")
    with FakeKubernetesApi() as fake, client.ApiClient(client.Configuration(host=fake.url)) as api_client:
        monkeypatch.setattr(pytorchjob, "submit_pytorchjob_and_wait", functools.partial(
            pytorchjob.submit_pytorchjob_and_wait, api_client=api_client, poll_interval_s=0.01))
        result = final_train_step(config, best_path=tmp_path / "best.json", splits=_splits(tmp_path),
                                  model_path=tmp_path / "model-artifact", replicas=2, gpu_count=1,
                                  workspace=str(tmp_path / "ws"), pipeline_run_id="run-7")
        [created] = fake.requests_to("POST", "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs")
    assert created.json["metadata"]["name"].startswith("resume-ner-final-run-7")
    assert not fake.jobs  # deleted once it succeeded
    assert result.run_id == "abc123" and result.test_metrics["f1_micro"] == 0.71
    assert (tmp_path / "model-artifact" / "model.safetensors").read_bytes() == b"weights"
