"""The pipeline's final_train with replicas > 1: a PyTorchJob with the GPU settings of the pipeline parameters,
run on the shared volume with everything it reads staged there, waited for (against the FAKE Kubernetes API of
support/fake_k8s_api.py), its model returned."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml
from support.fake_k8s_api import FakeKubernetesApi
from kubernetes import client
from support.pytorchjob_schema import assert_valid

from resume_ner.config import load
from resume_ner.errors import ConfigError
from resume_ner.k8s.final import final_pytorchjob, final_train_on_pytorchjob
from resume_ner.workflows.steps import pipeline_config

REPO = Path(__file__).resolve().parents[3]


def _volume(mount: Path) -> list[str]:
    """The overrides of a shared volume mounted at ``mount`` (a directory of the test standing in for it)."""
    return ["pipeline.volume_claim=resume-ner-data", f"pipeline.volume_mount_path={mount}"]


def _splits(tmp_path: Path) -> dict[str, Path]:
    """Split files where the KFP launcher downloads input artifacts: the task pod's own /s3/... directory
    (backend 2.17 component/launcher_v2.go:1239-1253), which no other pod sees."""
    from resume_ner.data.synth import generate_resumes

    splits = {}
    for index, split in enumerate(("train", "validation", "test")):
        path = tmp_path / "s3" / "mlpipeline" / "v2" / "artifacts" / "load-data" / split
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(d.to_doccano()) for d in generate_resumes(3, index)) + "\n")
        splits[split] = path
    return splits


def test_the_job_carries_the_gpu_settings_of_the_pipeline_parameters(tmp_path):
    config = pipeline_config([*_volume(tmp_path), "tracking.tracking_uri=http://mlflow:5000"], gpu_count=2,
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


def test_a_job_refuses_paths_off_the_shared_volume(tmp_path):
    config = pipeline_config(_volume(tmp_path / "mnt"))
    with pytest.raises(ConfigError, match="/s3/mlpipeline/best_config"):
        final_pytorchjob(config, best_path="/s3/mlpipeline/best_config", data_dir=tmp_path / "mnt" / "data",
                         work=tmp_path / "mnt", namespace="kubeflow", replicas=2, gpu_count=1)
    with pytest.raises(ConfigError, match="pipeline.volume_claim is not set"):
        final_pytorchjob(pipeline_config([]), best_path=tmp_path / "b.json", data_dir=tmp_path, work=tmp_path,
                         namespace="kubeflow", replicas=2, gpu_count=1)


def test_the_compiled_pipeline_passes_its_replicas_and_gpu_count_to_final_train():
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "resume_ner_training.yaml").read_text()))
    task = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["final-train"]
    parameters = task["inputs"]["parameters"]
    assert parameters["replicas"]["componentInputParameter"] == "pipelinechannel--replicas"
    assert parameters["gpu_count"]["componentInputParameter"] == "pipelinechannel--gpu_count"


def test_several_replicas_need_a_workspace_on_the_shared_volume(tmp_path):
    with pytest.raises(ConfigError, match="compile the pipeline with pipeline.volume_claim"):
        final_train_on_pytorchjob(pipeline_config([]), best_path=tmp_path / "b.json", splits={},
                                  model_path=tmp_path / "m", replicas=2, workspace=str(tmp_path))
    with pytest.raises(ConfigError, match="must lie on the shared volume"):
        final_train_on_pytorchjob(pipeline_config(_volume(tmp_path / "mnt")), best_path=tmp_path / "b.json",
                                  splits={}, model_path=tmp_path / "m", replicas=2,
                                  workspace=str(tmp_path / "elsewhere"))


@pytest.mark.network
def test_final_train_on_pytorchjob_runs_the_job_and_returns_the_model_its_pods_wrote(tmp_path, monkeypatch):
    import resume_ner.k8s.final as final
    import resume_ner.k8s.pytorchjob as pytorchjob

    mount = tmp_path / "mnt"
    config = pipeline_config([*_volume(mount), "tracking.enabled=false"], gpu_count=1)
    output = mount / "ws" / "run-7" / "final" / "output"  # what the job's rank 0 writes on the volume
    (output / "model").mkdir(parents=True)
    (output / "model" / "model.safetensors").write_bytes(b"weights")
    (output / "train_result.json").write_text(json.dumps({"run_id": "abc123", "model_dir": str(output / "model")}))
    (output / "test_metrics.json").write_text(json.dumps({"f1_micro": 0.71, "f1_macro": 0.6}))
    monkeypatch.setenv("POD_NAMESPACE", "team-a")
    with FakeKubernetesApi() as fake, client.ApiClient(client.Configuration(host=fake.url)) as api_client:
        monkeypatch.setattr(final, "submit_pytorchjob_and_wait", functools.partial(
            pytorchjob.submit_pytorchjob_and_wait, api_client=api_client, poll_interval_s=0.01))
        splits = _splits(tmp_path)
        best = tmp_path / "s3" / "mlpipeline" / "v2" / "artifacts" / "select-best" / "best_config"
        best.parent.mkdir(parents=True)
        best.write_text(json.dumps({"params": {"training.learning_rate": 1e-4}}))
        result = final_train_on_pytorchjob(config, best_path=best, splits=splits,
                                           model_path=tmp_path / "model-artifact", replicas=2, gpu_count=1,
                                           workspace=str(mount / "ws"), pipeline_run_id="run-7")
        [created] = fake.requests_to("POST", "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs")
    assert created.json["metadata"]["name"].startswith("resume-ner-final-run-7")
    args = created.json["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    paths = {flag: Path(args[args.index(flag) + 1]) for flag in ("--config-dir", "--best-json", "--data",
                                                                  "--output-dir")}
    assert all(path.is_relative_to(mount) for path in paths.values()), paths  # nothing of this pod's file system
    for split, source in splits.items():  # copies on the volume, not links into this pod's artifact directories
        staged = paths["--data"] / f"{split}.jsonl"
        assert staged.is_file() and not staged.is_symlink() and staged.read_text() == source.read_text()
    assert not paths["--best-json"].is_symlink() and paths["--best-json"].read_text() == best.read_text()
    assert (paths["--config-dir"] / "train.yaml").is_file()
    assert not fake.jobs  # deleted once it succeeded
    assert result.run_id == "abc123" and result.test_metrics["f1_micro"] == 0.71
    assert (tmp_path / "model-artifact" / "model.safetensors").read_bytes() == b"weights"
