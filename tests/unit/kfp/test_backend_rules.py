"""The rules of the Kubeflow Pipelines backend (2.17) that the compiled pipeline depends on.

kfp.local runs none of the backend's code paths, and no backend can run here, so each rule is read from the
backend's source (``kubeflow/pipelines`` at tag 2.17.0, cited per test) and held over the compiled YAML, and over
``kfp_backend_emulation`` (an emulation of the driver, not the driver) for what a run's parameters turn into: the
pods' resources, GPUs, node selectors, tolerations, environment and volumes, and the cache key.

No ``from __future__ import annotations`` here: the KFP compiler reads a test pipeline's annotations as types.
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from resume_ner.config import load
from resume_ner.errors import ConfigError
from resume_ner.kfp.components import end_pipeline_run, plan_run
from resume_ner.kfp.pipelines import (
    MIN_KFP_BACKEND,
    PIPELINE_FILE,
    PIPELINES_DIR,
    check_cluster_target,
    compile_all,
)
from resume_ner.k8s.final import final_pytorchjob
from resume_ner.layout import PIPELINE_CONFIG_ENV
from resume_ner.workflows.steps import plan_run_step

from support.kfp_backend_emulation import EmulatedDriverError, cache_key_parameters, pod_fields, task_inputs
from support.pipeline_pods import BODY, PLAN, TRIAL, emulated_run, python_arguments, read_compiled

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / PIPELINES_DIR / PIPELINE_FILE
DOCS = REPO / "docs" / "pipelines.md"
LOAD, FINAL = [BODY, "load-data"], [BODY, "final-train"]
GPU = "nvidia.com/gpu"
AKS_GPU_SELECTOR = {"kubernetes.azure.com/accelerator": "nvidia"}
AKS_GPU_TOLERATION = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['(?P<name>[^']+)'\]\}\}")


@pytest.fixture
def compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """compiled(*overrides, image=None): (spec, platform) of the pipeline compiled from config/ with overrides."""
    def compile_with(*overrides: str, image: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        if image:
            monkeypatch.setenv("RESUME_NER_IMAGE", image)
        else:
            monkeypatch.delenv("RESUME_NER_IMAGE", raising=False)
        out = tmp_path / f"compiled-{len(list(tmp_path.glob('compiled-*')))}"
        compile_all(out, load(REPO / "config", list(overrides)))
        return read_compiled(out / PIPELINES_DIR / PIPELINE_FILE)
    return compile_with


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "resumes.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"text": "Jane Doe", "labels": [[0, 8, "Name"]]}) + "\n", encoding="utf-8")
    return path


def _tasks(spec: dict[str, Any]):
    """(path, task, its DAG's component) of every task of every DAG."""
    def walk(component: dict[str, Any], prefix: list[str]):
        for name, task in component["dag"]["tasks"].items():
            yield [*prefix, name], task, component
            child = spec["components"][task["componentRef"]["name"]]
            if "dag" in child:
                yield from walk(child, [*prefix, name])
    yield from walk(spec["root"], [])


def _source_type(spec: dict[str, Any], parameter: dict[str, Any], parent: dict[str, Any]) -> str:
    """The parameter type of the value a task input gets from its source (resolve.go:390-440)."""
    if "componentInputParameter" in parameter:
        return parent["inputDefinitions"]["parameters"][parameter["componentInputParameter"]]["parameterType"]
    if "taskOutputParameter" in parameter:
        producer = parameter["taskOutputParameter"]
        dag_tasks = parent["dag"]["tasks"]
        component = spec["components"][dag_tasks[producer["producerTask"]]["componentRef"]["name"]]
        return component["outputDefinitions"]["parameters"][producer["outputParameterKey"]]["parameterType"]
    constant = parameter.get("runtimeValue", {}).get("constant")
    return "STRING" if isinstance(constant, str) else "NUMBER"


def _resource_placeholder_problems(spec: dict[str, Any]) -> list[str]:
    """Every placeholder in a pod-spec field (image, CPU, memory, accelerator) that the driver would resolve to ""."""
    problems = []
    executors = spec["deploymentSpec"]["executors"]
    for path, task, parent in _tasks(spec):
        component = spec["components"][task["componentRef"]["name"]]
        container = executors.get(component.get("executorLabel"), {}).get("container")
        if not container:
            continue
        resources = container.get("resources", {})
        fields = {"image": container["image"], **{k: v for k, v in resources.items() if isinstance(v, str)},
                  **{f"accelerator.{k}": v for k, v in resources.get("accelerator", {}).items() if isinstance(v, str)}}
        declared = component.get("inputDefinitions", {}).get("parameters", {})
        for field, value in fields.items():
            for name in PLACEHOLDER.findall(value):
                kind = declared.get(name, {}).get("parameterType")
                if kind != "STRING":  # not declared STRING by the component: the value keeps its source's kind
                    kind = _source_type(spec, task["inputs"]["parameters"][name], parent)
                if kind != "STRING":
                    problems.append(f"{'/'.join(path)}: {field} reads {name}, a {kind}")
    return problems


# --- 1. resource placeholders resolve to strings ----------------------------------------------------------------


def test_every_pod_spec_placeholder_of_the_committed_pipeline_reads_a_string():
    """driver/resolve.go:818-831 resolves a resource placeholder with GetStringValue(), "" for a NUMBER input, and
    driver.go:440 then sets no GPU limit at all: every placeholder must read a STRING."""
    spec, _ = read_compiled(COMMITTED)
    assert _resource_placeholder_problems(spec) == []
    accelerated = [path for path, task, _ in _tasks(spec) if "accelerator" in
                   spec["deploymentSpec"]["executors"].get(spec["components"][task["componentRef"]["name"]].get(
                       "executorLabel"), {}).get("container", {}).get("resources", {})]
    assert sorted(map(tuple, accelerated)) == [tuple(FINAL), tuple(TRIAL)]


@pytest.mark.parametrize("overrides", [
    ("pipeline.gpu=false",),
    ("pipeline.volume_claim=resume-ner-data", "pipeline.data_source=object_store"),
    ("pipeline.gpu_node_vm_size=Standard_NC24s_v3", "pipeline.gpu_count=4"),
], ids=["cpu", "object-store", "four-gpus"])
def test_every_pod_spec_placeholder_reads_a_string_in_other_compiles(compiled, overrides):
    spec, _ = compiled(*overrides)
    assert _resource_placeholder_problems(spec) == []


def test_the_string_rule_catches_a_number_parameter_in_a_resource(tmp_path: Path):
    """The rule fails a spec that sets the GPU limit from an int pipeline input (what this pipeline did)."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def train(gpus: int) -> int:
        return gpus

    @dsl.pipeline(name="number-in-a-resource")
    def number_in_a_resource(gpu_count: int = 1):
        task = train(gpus=gpu_count)
        task.set_accelerator_type(GPU).set_accelerator_limit(gpu_count)

    compiler.Compiler().compile(number_in_a_resource, str(tmp_path / "p.yaml"))
    spec, platform = read_compiled(tmp_path / "p.yaml")
    assert _resource_placeholder_problems(spec) == [
        "train: accelerator.resourceCount reads pipelinechannel--gpu_count, a NUMBER_INTEGER"]
    pod = pod_fields(spec, platform, ["train"], {"gpu_count": 2})
    assert GPU not in pod["resources"]["limits"]  # silently dropped, as the real driver does


# --- 1 and 7. per-run placement on AKS (emulated driver) --------------------------------------------------------


def test_default_run_puts_every_trial_and_the_final_training_on_one_gpu_node(compiled, data_file, monkeypatch):
    spec, platform = read_compiled(COMMITTED)
    pods = emulated_run(spec, platform, {"data_uri": str(data_file)}, monkeypatch)
    assert sorted(name for name in pods if name.startswith("hpo-trial")) == ["hpo-trial-0", "hpo-trial-1"]
    for name in ("final-train", "hpo-trial-0", "hpo-trial-1"):
        pod = pods[name]
        assert pod["resources"] == {"limits": {"cpu": "4", "memory": "22Gi", GPU: "1"},
                                    "requests": {"cpu": "3", "memory": "16Gi"}}, name
        assert pod["nodeSelector"] == AKS_GPU_SELECTOR and pod["tolerations"] == [AKS_GPU_TOLERATION], name
    assert pods["plan-run"]["nodeSelector"] == {} and GPU not in pods["plan-run"]["resources"]["limits"]


def test_gpu_count_zero_keeps_every_task_off_the_gpu_pool(data_file, monkeypatch):
    spec, platform = read_compiled(COMMITTED)
    pods = emulated_run(spec, platform, {"data_uri": str(data_file), "gpu_count": 0}, monkeypatch)
    for name, pod in pods.items():
        assert GPU not in pod["resources"]["limits"], name
        assert pod["nodeSelector"] == {} and pod["tolerations"] == [], name
    assert pods["hpo-trial-0"]["resources"]["requests"] == {"cpu": "3", "memory": "16Gi"}  # trains on CPU there


def test_more_gpus_and_workers_per_run(compiled, data_file, monkeypatch):
    spec, platform = compiled("pipeline.gpu_node_vm_size=Standard_NC12s_v3")
    pods = emulated_run(spec, platform, {"data_uri": str(data_file), "gpu_count": 2, "parallelism": 4}, monkeypatch)
    trials = sorted(name for name in pods if name.startswith("hpo-trial"))
    assert trials == [f"hpo-trial-{i}" for i in range(4)]
    assert {pods[name]["resources"]["limits"][GPU] for name in [*trials, "final-train"]} == {"2"}


def test_multi_node_final_training_waits_without_a_gpu_on_plumbing_resources(compiled, data_file, monkeypatch):
    spec, platform = compiled("pipeline.volume_claim=resume-ner-data")
    values = {"data_uri": str(data_file), "replicas": 3}
    pods = emulated_run(spec, platform, values, monkeypatch)
    final = pods["final-train"]
    assert final["resources"] == {"limits": {"cpu": "500m", "memory": "1G"}, "requests": {"cpu": "100m",
                                                                                        "memory": "256M"}}
    assert final["nodeSelector"] == {} and final["tolerations"] == []
    assert pods["hpo-trial-0"]["resources"]["limits"][GPU] == "1"  # the trials still train on GPUs


def test_a_run_that_cannot_be_placed_fails_at_plan_run_before_anything_trains(compiled, data_file, monkeypatch):
    spec, platform = read_compiled(COMMITTED)  # Standard_NC4as_T4_v3: 1 GPU a node; no volume
    with pytest.raises(ConfigError) as raised:
        emulated_run(spec, platform, {"data_uri": str(data_file), "gpu_count": 2, "replicas": 2,
                                       "parallelism": 0}, monkeypatch)
    message = str(raised.value)
    for expected in ("parallelism must be at least 1", "gpu_count=2: a Standard_NC4as_T4_v3 node has 1 GPU",
                     "replicas=2 trains as a PyTorchJob"):
        assert expected in message


def test_gpu_task_requests_must_fit_the_gpu_node_size():
    """A request above a node's allocatable keeps the pod Pending for ever (no error in KFP): refused at load."""
    with pytest.raises(ConfigError, match=r"hpo_trial: cpu_request 4 exceeds the 3560m a Standard_NC4as_T4_v3"):
        load(REPO / "config", ["pipeline.resources={hpo_trial: {cpu_request: '4', cpu_limit: '8', "
                               "memory_request: 16G, memory_limit: 20G}}"])
    with pytest.raises(ConfigError, match=r"final_train: memory_request 30Gi exceeds"):
        load(REPO / "config", ["pipeline.resources={final_train: {cpu_request: '3', cpu_limit: '4', "
                               "memory_request: 30Gi, memory_limit: 30Gi}}"])
    with pytest.raises(ConfigError, match=r"gpu_count 2 exceeds the 1 GPU\(s\) of a Standard_NC4as_T4_v3 node"):
        load(REPO / "config", ["pipeline.gpu_count=2"])
    bigger = load(REPO / "config", ["pipeline.gpu_node_vm_size=Standard_NC24ads_A100_v4", "pipeline.resources="
                                    "{hpo_trial: {cpu_request: '20', cpu_limit: '24', memory_request: 160Gi, "
                                    "memory_limit: 200Gi}}"])
    assert bigger.pipeline.resources["hpo_trial"].cpu_request == "20"
    assert load(REPO / "config", ["pipeline.gpu=false", "pipeline.gpu_count=8"]).pipeline.gpu_count == 8
    with pytest.raises(ConfigError, match="not a known AKS GPU size"):
        load(REPO / "config", ["pipeline.gpu_node_vm_size=Standard_D4s_v5"])
    with pytest.raises(ConfigError, match="not a CPU quantity"):
        load(REPO / "config", ["pipeline.resources={select_best: {cpu_request: 'two'}}"])


# --- 2. the exit handler's final status --------------------------------------------------------------------------


def test_the_exit_handler_gets_the_exit_handler_dags_final_status():
    """driver/resolve.go:458-493: the exit task's TASK_FINAL_STATUS input is the state of its dependent task, the
    exit-handler DAG."""
    spec, _ = read_compiled(COMMITTED)
    exit_task = spec["root"]["dag"]["tasks"]["end-pipeline-run"]
    assert exit_task["dependentTasks"] == [BODY]
    assert exit_task["inputs"]["parameters"]["pipeline_status"] == {"taskFinalStatus": {"producerTask": BODY}}
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


@pytest.mark.parametrize(("state", "status", "tag"), [
    ("COMPLETE", "FINISHED", "SUCCEEDED"),  # the backend, every task succeeded
    ("CACHED", "FINISHED", "SUCCEEDED"),
    ("SUCCEEDED", "FINISHED", "SUCCEEDED"),  # kfp.local
    ("FAILED", "FAILED", "FAILED"),
    ("CANCELED", "FAILED", "FAILED"),
    ("RUNNING", "FAILED", "FAILED"),  # a task killed before it could publish its state
])
def test_the_exit_handler_ends_the_mlflow_run_by_the_backends_state(store, tmp_path, state, status, tag):
    """The KFP SDK's executor builds PipelineTaskFinalStatus from the struct the backend's driver writes (state,
    pipelineTaskName, pipelineJobResourceName, an empty error: resolve.go:466-476, driver_test.go:937-948)."""
    from kfp.dsl.executor import Executor
    from mlflow import MlflowClient

    from resume_ner.workflows.steps import pipeline_config, start_pipeline_step

    run_id = start_pipeline_step(pipeline_config(mlflow_uri=store), pipeline_run_id=f"run-{state}")
    executor_input = {
        "inputs": {"parameterValues": {
            "pipeline_status": {"state": state, "pipelineTaskName": BODY, "error": {},
                                "pipelineJobResourceName": "resume-ner-training-x7k2p"},
            "pipeline_run_id": f"run-{state}", "mlflow_uri": store}},
        "outputs": {"outputFile": str(tmp_path / "executor_output.json")},
    }
    Executor(executor_input, end_pipeline_run).execute()
    run = MlflowClient(tracking_uri=store).get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["resume_ner.pipeline_status"] == tag
    if tag == "FAILED":
        assert run.data.tags["resume_ner.pipeline_error"] == f"pipeline ended {state}"


# --- 3. compile-time settings reach the pods --------------------------------------------------------------------


def test_the_pods_run_with_the_config_the_pipeline_was_compiled_with(compiled, data_file, monkeypatch):
    """The driver copies container env verbatim (driver.go:290-293, 467-468): the compile-time config travels there."""
    from resume_ner.workflows.steps import pipeline_config

    image = "myacr.azurecr.io/resume-ner:0.1.0-cuda"
    spec, platform = compiled("pipeline.volume_claim=team-volume", "pipeline.volume_mount_path=/mnt/team",
                              "training.learning_rate=1.5e-4", "data.split_seed=7", "pipeline.mlflow_secret=null",
                              image=image)
    monkeypatch.delenv("RESUME_NER_IMAGE")  # the pods do not have it
    monkeypatch.delenv("RESUME_NER_CONFIG_DIR", raising=False)
    pods = emulated_run(spec, platform, {"data_uri": str(data_file)}, monkeypatch)
    assert set(pods) == {"plan-run", "start-pipeline-run", "load-data", "hpo-trial-0", "hpo-trial-1", "select-best",
                         "final-train", "register-lineage", "end-pipeline-run"}
    for name, pod in pods.items():
        [value] = [v["value"] for v in pod["env"] if v["name"] == PIPELINE_CONFIG_ENV]
        assert pod["image"] == image, name
        assert pod["volumeMounts"] == [{"name": "team-volume", "mountPath": "/mnt/team"}], name
        monkeypatch.setenv(PIPELINE_CONFIG_ENV, value)
        config = pipeline_config([])
        assert (config.training.learning_rate, config.data.split_seed) == (1.5e-4, 7), name
        assert (config.pipeline.volume_claim, config.pipeline.image) == ("team-volume", image), name


def test_a_multi_node_job_built_in_a_pod_gets_the_compiled_volume_and_image(compiled, tmp_path, monkeypatch):
    image = "myacr.azurecr.io/resume-ner:0.1.0-cuda"
    mount = tmp_path / "mnt"
    spec, platform = compiled("pipeline.volume_claim=team-volume", f"pipeline.volume_mount_path={mount}", image=image)
    monkeypatch.delenv("RESUME_NER_IMAGE")
    from resume_ner.workflows.steps import pipeline_config

    pod = pod_fields(spec, platform, PLAN, {"data_uri": "x"})  # every task's pod has the same config
    [value] = [v["value"] for v in pod["env"] if v["name"] == PIPELINE_CONFIG_ENV]
    monkeypatch.setenv(PIPELINE_CONFIG_ENV, value)
    work = mount / "runs" / "r1" / "final"
    (work / "data").mkdir(parents=True)
    job = final_pytorchjob(pipeline_config([]), best_path=work / "best_trial.json", data_dir=work / "data", work=work,
                           namespace="kubeflow", replicas=2, gpu_count=1, pipeline_run_id="r1")
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        pod_spec = replica["template"]["spec"]
        assert pod_spec["containers"][0]["image"] == image
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "team-volume"}} in pod_spec["volumes"]
        assert {"name": "data", "mountPath": str(mount)} in pod_spec["containers"][0]["volumeMounts"]
        assert pod_spec["serviceAccountName"] == "resume-ner-trainer"


# --- 4. the PyTorchJob reads nothing of the launching pod: tests/unit/k8s/test_final_pytorchjob.py ---------------


# --- 5. data on a cluster: the object store route, and a cache key that follows the content ----------------------


def test_object_store_data_is_imported_as_a_new_dataset_artifact_every_run(compiled):
    """importer_launcher.go:203-241 takes the URI from the parent DAG's input; reimport makes a new MLMD artifact,
    so a new cache key for load_data (cacheutils/cache.go:187-193 keys by artifact id, not content)."""
    spec, _ = compiled("pipeline.volume_claim=resume-ner-data", "pipeline.data_source=object_store")
    body = spec["components"]["comp-exit-handler-1"]
    importer = body["dag"]["tasks"]["importer"]
    assert importer["dependentTasks"] == ["plan-run"]  # the URI is checked first
    assert importer["inputs"]["parameters"]["uri"] == {"componentInputParameter": "pipelinechannel--data_uri"}
    assert body["inputDefinitions"]["parameters"]["pipelinechannel--data_uri"]["parameterType"] == "STRING"
    label = spec["components"][importer["componentRef"]["name"]]["executorLabel"]
    executor = spec["deploymentSpec"]["executors"][label]
    assert executor["importer"]["artifactUri"] == {"runtimeParameter": "uri"}
    assert executor["importer"]["reimport"] is True
    assert executor["importer"]["typeSchema"]["schemaTitle"] == "system.Dataset"
    load_data = body["dag"]["tasks"]["load-data"]["inputs"]
    assert load_data["artifacts"]["data"] == {"taskOutputArtifact": {"outputArtifactKey": "artifact",
                                                                     "producerTask": "importer"}}
    assert "data_uri" not in load_data["parameters"]


@pytest.mark.parametrize(("uri", "accepted"), [
    ("s3://kfp-artifacts/datasets/resumes.jsonl", True),
    ("minio://mlpipeline/datasets/resumes/", True),
    ("gs://bucket/resumes.jsonl", True),
    ("https://acct.blob.core.windows.net/data/resumes.jsonl", False),
    ("az://data/resumes.jsonl", False),
    ("/mnt/resume-ner/data/resumes.jsonl", False),
    ("s3://bucket-only", False),
])
def test_object_store_uris_are_checked_before_the_importer_runs(uri: str, accepted: bool):
    """objectstore/config.go:118-138: the launcher reads gs://, s3://, minio:// (and mem://) only."""
    config = load(REPO / "config", ["pipeline.data_source=object_store"])
    if accepted:
        plan = plan_run_step(config, data_uri=uri, parallelism=1, gpu_count=0, replicas=1)
        assert plan.data_digest == ""
    else:
        with pytest.raises(ConfigError, match="object-store data") as raised:
            plan_run_step(config, data_uri=uri, parallelism=1, gpu_count=0, replicas=1)
        if "windows.net" in uri or uri.startswith("az://"):
            assert "S3-compatible gateway" in str(raised.value)


def test_load_datas_cache_key_follows_the_content_of_the_data(data_file, monkeypatch):
    """cacheutils/cache.go:173-229 keys a task by its input values, not by what a path holds: the content digest
    from plan_run is one of load_data's inputs, so new data at the same path is loaded again."""
    spec, platform = read_compiled(COMMITTED)
    values = {"data_uri": str(data_file)}

    def key() -> str:
        emulated_run(spec, platform, values, monkeypatch)  # sets the env plan_run reads
        _, inputs = task_inputs(spec, PLAN, values)
        outputs = {"plan-run": plan_run(**python_arguments(plan_run, inputs))._asdict()}
        return cache_key_parameters(spec, LOAD, values, outputs)

    first = key()
    assert key() == first  # unchanged data: served from the cache
    data_file.write_text(data_file.read_text() + json.dumps({"text": "John Roe", "labels": [[0, 8, "Name"]]}) + "\n")
    assert key() != first
    assert spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["load-data"]["cachingOptions"]["enableCache"]


def test_volume_data_that_is_missing_fails_the_run_at_plan_run(tmp_path, monkeypatch):
    spec, platform = read_compiled(COMMITTED)
    with pytest.raises(ConfigError, match="does not exist"):
        emulated_run(spec, platform, {"data_uri": str(tmp_path / "nowhere.jsonl")}, monkeypatch)


# --- 8. deployability ------------------------------------------------------------------------------------------

# The first backend release of each feature the compiled spec uses (tags of kubeflow/pipelines).
BACKEND_FEATURES = {
    "TASK_FINAL_STATUS input": "2.14.0",  # 0d857b6f8a feat(backend/sdk): support PipelineTaskFinalStatus (#11953)
    "optional secretAsEnv": "2.15.0",  # 55ec8469d5 (#12216): k8s.go secretAsEnv.Optional
    "nodeSelectorJson / tolerationJson": "2.5.0",  # driver GetNodeSelectorJson, GetTolerationJson
    "resource placeholders": "2.4.0",  # driver GetResourceCpuLimit, accelerator GetResourceCount
}


def _features(spec: dict[str, Any], platform: dict[str, Any]) -> set[str]:
    found = set()
    text = json.dumps(spec)
    if '"TASK_FINAL_STATUS"' in text:
        found.add("TASK_FINAL_STATUS input")
    if any(s.get("optional") for config in platform.values() for s in config.get("secretAsEnv", [])):
        found.add("optional secretAsEnv")
    if any("nodeSelectorJson" in config.get("nodeSelector", {}) or
           any("tolerationJson" in t for t in config.get("tolerations", [])) for config in platform.values()):
        found.add("nodeSelectorJson / tolerationJson")
    if PLACEHOLDER.search(json.dumps(spec["deploymentSpec"])):
        found.add("resource placeholders")
    return found


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_documented_minimum_backend_runs_every_feature_of_the_spec():
    spec, platform = read_compiled(COMMITTED)
    features = _features(spec, platform)
    assert features == set(BACKEND_FEATURES)
    assert max(_version(BACKEND_FEATURES[f]) for f in features) == _version(MIN_KFP_BACKEND)
    assert f"Kubeflow Pipelines backend {MIN_KFP_BACKEND}" in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize(("image", "overrides", "force", "expected"), [
    ("resume-ner:0.1.0", ("pipeline.volume_claim=v",), False, "names no registry"),
    ("myacr.azurecr.io/resume-ner:0.1.0", ("pipeline.volume_claim=v",), False, "is the CPU image"),
    ("myacr.azurecr.io/resume-ner:0.1.0-cuda", (), False, "no volume is mounted"),
    ("myacr.azurecr.io/resume-ner:0.1.0-cuda", ("pipeline.volume_claim=v", "pipeline.mlflow_uri=sqlite:///m.db"),
     False, "pipeline.mlflow_uri"),
])
def test_compiling_for_a_cluster_refuses_what_cannot_run_there(monkeypatch, image, overrides, force, expected):
    monkeypatch.setenv("RESUME_NER_IMAGE", image)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_cluster_target(load(REPO / "config", list(overrides)), force=force)


@pytest.mark.parametrize(("image", "overrides", "force"), [
    ("myacr.azurecr.io/resume-ner:0.1.0-cuda", ("pipeline.volume_claim=v",), False),
    ("myacr.azurecr.io/resume-ner:0.1.0", ("pipeline.volume_claim=v",), True),
    ("localhost:5000/resume-ner:0.1.0", ("pipeline.gpu=false", "pipeline.data_source=object_store"), False),
    ("registry.local:5000/team/resume-ner:1-cuda", ("pipeline.volume_claim=v",), False),
])
def test_compiling_for_a_cluster_accepts_a_pullable_image(monkeypatch, image, overrides, force):
    monkeypatch.setenv("RESUME_NER_IMAGE", image)
    check_cluster_target(load(REPO / "config", list(overrides)), force=force)


def test_an_emulated_driver_error_is_raised_for_an_empty_quantity():
    """Sanity of the emulation: a resource placeholder resolving to "" fails the task, as driver.go:191 does."""
    spec, platform = read_compiled(COMMITTED)
    outputs = {"plan-run": {key: "" for key in plan_run.__annotations__["return"]._fields}}
    with pytest.raises(EmulatedDriverError, match="quantities must match"):
        pod_fields(spec, platform, FINAL, {"data_uri": "x"}, outputs)


def test_the_kfp_launcher_example_is_what_the_backend_parses():
    """config/s3.go:25-70 (the providers' JSON fields) and launcher_v2.go:1030-1043 (imported data reuses the
    pipeline root's session only in the same scheme and bucket)."""
    from urllib.parse import urlparse

    path = REPO / "manifests" / "examples" / "kfp-launcher.yaml"
    [config_map] = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert config_map["metadata"]["name"] == "kfp-launcher" and "namespace" not in config_map["metadata"]
    default = yaml.safe_load(config_map["data"]["providers"])["s3"]["default"]
    assert set(default) <= {"endpoint", "credentials", "region", "disableSSL", "forcePathStyle", "maxRetries"}
    assert default["credentials"]["fromEnv"] is False
    assert set(default["credentials"]["secretRef"]) == {"secretName", "accessKeyKey", "secretKeyKey"}
    root = urlparse(config_map["data"]["defaultPipelineRoot"])
    [data_uri] = re.findall(r"data_uri=(\S+)", path.read_text(encoding="utf-8"))
    assert (urlparse(data_uri).scheme, urlparse(data_uri).netloc) == (root.scheme, root.netloc)
    config = load(REPO / "config", ["pipeline.data_source=object_store"])
    assert plan_run_step(config, data_uri=data_uri, parallelism=1, gpu_count=0, replicas=1).data_digest == ""
