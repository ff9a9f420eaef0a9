"""The compiled specs in components/ and pipelines/: up to date, strictly valid KFP IR, and carrying the
Kubernetes settings a cluster needs (GPU placement, resources, secrets, caching)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from resume_ner.config import load
from resume_ner.kfp.components import REUSABLE
from resume_ner.kfp.pipelines import COMPONENTS_DIR, PIPELINE_FILE, PIPELINES_DIR, compile_all

REPO = Path(__file__).resolve().parents[3]
COMMITTED = [REPO / COMPONENTS_DIR / f"{name}.yaml" for name in REUSABLE] + [REPO / PIPELINES_DIR / PIPELINE_FILE]
GPU_EXECUTORS = ("exec-hpo-trial", "exec-final-train")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _parse_strict(path: Path) -> tuple[Any, dict[str, Any]]:
    """(PipelineSpec, {executor: KubernetesExecutorConfig}) of a compiled file; unknown fields raise."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    documents = _documents(path)
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    executors = {}
    for platform in documents[1:]:
        platform_spec = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
        for name, config in platform_spec.platforms["kubernetes"].deployment_spec.executors.items():
            executors[name] = json_format.ParseDict(
                json_format.MessageToDict(config), kubernetes_executor_config_pb2.KubernetesExecutorConfig(),
                ignore_unknown_fields=False)
    return spec, executors


def _check_references(spec: Any) -> None:
    """Every task's component, every component's executor, every dependency and producer resolves."""
    executors = set(spec.deployment_spec.fields["executors"].struct_value.fields)
    dags = [("root", spec.root)] + [(name, c) for name, c in spec.components.items() if c.HasField("dag")]
    for name, component in spec.components.items():
        if component.WhichOneof("implementation") == "executor_label":
            assert component.executor_label in executors, (name, component.executor_label)
    for dag_name, component in dags:
        tasks = component.dag.tasks
        for task_name, task in tasks.items():
            assert task.component_ref.name in spec.components, (dag_name, task_name)
            for dependency in task.dependent_tasks:
                assert dependency in tasks, (dag_name, task_name, dependency)
            producers = [v.task_output_parameter.producer_task for v in task.inputs.parameters.values()]
            producers += [v.task_output_artifact.producer_task for v in task.inputs.artifacts.values()]
            for producer in filter(None, producers):
                assert producer in tasks, (dag_name, task_name, producer)


def test_committed_specs_match_a_fresh_compile(tmp_path, monkeypatch):
    monkeypatch.delenv("RESUME_NER_IMAGE", raising=False)
    written = compile_all(tmp_path, load(REPO / "config"))
    assert [p.relative_to(tmp_path) for p in written] == [p.relative_to(REPO) for p in COMMITTED]
    for fresh, committed in zip(written, COMMITTED):
        assert committed.exists(), f"{committed} is missing: run `make compile` and commit it"
        assert fresh.read_text() == committed.read_text(), f"{committed} is out of date: run `make compile`"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_every_committed_spec_parses_strictly_and_its_references_resolve(path):
    spec, _ = _parse_strict(path)
    _check_references(spec)
    images = {e.struct_value.fields["container"].struct_value.fields["image"].string_value
              for e in spec.deployment_spec.fields["executors"].struct_value.fields.values()}
    assert images == {load().pipeline.image}
    commands = [e.struct_value.fields["container"].struct_value for e in
                spec.deployment_spec.fields["executors"].struct_value.fields.values()]
    for container in commands:
        command = " ".join(v.string_value for v in container.fields["command"].list_value.values)
        assert "pip install" not in command  # the library is in the image


def test_a_bad_field_fails_the_strict_parse(tmp_path):
    from google.protobuf import json_format

    documents = _documents(COMMITTED[-1])
    documents[0]["root"]["dag"]["tasks"]["exit-handler-1"]["unknownField"] = 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(documents))
    with pytest.raises(json_format.ParseError):
        _parse_strict(broken)


def test_gpu_tasks_take_their_accelerator_node_selector_and_tolerations_from_plan_run():
    """Per-run placement: plan_run's outputs (tests/unit/kfp/test_backend_rules.py emulates what the driver makes
    of them); every other task stays off the GPU pool."""
    spec, platform = _parse_strict(COMMITTED[-1])
    executors = spec.deployment_spec.fields["executors"].struct_value.fields
    for name, prefix in (("exec-hpo-trial", "trial"), ("exec-final-train", "final")):
        resources = executors[name].struct_value.fields["container"].struct_value.fields["resources"].struct_value
        accelerator = resources.fields["accelerator"].struct_value.fields
        assert accelerator["resourceType"].string_value == "nvidia.com/gpu"
        assert f"plan-run-{prefix}_gpus" in accelerator["resourceCount"].string_value
        selector = platform[name].node_selector.node_selector_json
        [toleration] = platform[name].tolerations
        channels = [selector.component_input_parameter or selector.task_output_parameter.output_parameter_key,
                    toleration.toleration_json.component_input_parameter
                    or toleration.toleration_json.task_output_parameter.output_parameter_key]
        assert [c.rpartition("plan-run-")[2] for c in channels] == [f"{prefix}_node_selector", f"{prefix}_tolerations"]
    for name in set(executors) - set(GPU_EXECUTORS):
        resources = executors[name].struct_value.fields["container"].struct_value.fields["resources"].struct_value
        assert "accelerator" not in resources.fields, name
        assert not platform.get(name) or not (platform[name].tolerations or platform[name].HasField("node_selector")), name


def test_every_task_has_cpu_and_memory_requests_and_limits():
    spec, _ = _parse_strict(COMMITTED[-1])
    for name, executor in spec.deployment_spec.fields["executors"].struct_value.fields.items():
        resources = executor.struct_value.fields["container"].struct_value.fields["resources"].struct_value.fields
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources[key].string_value, (name, key)


def test_secrets_are_injected_as_env_and_only_load_data_is_cached():
    spec, platform = _parse_strict(COMMITTED[-1])
    mlflow_env = {env.env_var for env in platform["exec-final-train"].secret_as_env[0].key_to_env}
    assert mlflow_env == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    optuna = [s for s in platform["exec-hpo-trial"].secret_as_env if s.secret_name == "resume-ner-optuna-db"]
    assert [env.env_var for env in optuna[0].key_to_env] == ["RESUME_NER_OPTUNA_STORAGE"]
    body = spec.components["comp-exit-handler-1"].dag.tasks
    assert body["load-data"].caching_options.enable_cache
    assert body["load-data"].inputs.parameters["data_digest"].task_output_parameter.producer_task == "plan-run"
    for name, task in body.items():
        if name != "load-data":
            assert not task.caching_options.enable_cache, name
    assert spec.root.dag.tasks["end-pipeline-run"].trigger_policy.strategy == 2  # ALL_UPSTREAM_TASKS_COMPLETED


def test_compile_time_settings_change_the_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("RESUME_NER_IMAGE", "myacr.azurecr.io/resume-ner:1.2.3")
    config = load(REPO / "config", ["pipeline.gpu=false", "pipeline.volume_claim=resume-ner-data",
                                    "pipeline.mlflow_secret=null"])
    compile_all(tmp_path, config)
    spec, platform = _parse_strict(tmp_path / PIPELINES_DIR / PIPELINE_FILE)
    executors = spec.deployment_spec.fields["executors"].struct_value.fields
    for name, executor in executors.items():
        container = executor.struct_value.fields["container"].struct_value.fields
        assert container["image"].string_value == "myacr.azurecr.io/resume-ner:1.2.3"
        assert "accelerator" not in container["resources"].struct_value.fields
        assert platform[name].pvc_mount[0].mount_path == "/mnt/resume-ner", name
    assert not platform["exec-final-train"].HasField("node_selector")
    assert not platform["exec-final-train"].secret_as_env
    assert spec.root.input_definitions.parameters["workspace"].default_value.string_value == "/mnt/resume-ner/runs"
