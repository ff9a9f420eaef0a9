"""The pods a run of the project's compiled pipeline gets, through the KFP driver EMULATION of
kfp_backend_emulation.py: each task's pod fields for given run parameters, with plan_run's outputs computed by
running the real plan_run under the environment its pod gets."""

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.kfp_backend_emulation import pod_fields, task_inputs

from resume_ner.kfp.components import plan_run

BODY = "exit-handler-1"
PLAN = [BODY, "plan-run"]
TRIAL = [BODY, "for-loop-2", "hpo-trial"]


def read_compiled(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, Kubernetes executor configs) of a compiled file."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}
    return documents[0], platform


def python_arguments(function: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """The resolved inputs a component function takes, NUMBER_INTEGERs as ints (the SDK executor's conversion)."""
    parameters = inspect.signature(function).parameters
    return {name: int(value) if parameters[name].annotation is int else value
            for name, value in inputs.items() if name in parameters}


def emulated_run(spec: dict[str, Any], platform: dict[str, Any], values: dict[str, Any],
                 monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Pod fields of every task of a run with ``values`` (an hpo-trial per worker): plan_run's outputs come from
    running it with the inputs and the environment its pod gets."""
    plan_pod = pod_fields(spec, platform, PLAN, values)
    for variable in plan_pod["env"]:
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
    _, inputs = task_inputs(spec, PLAN, values)
    outputs = {"plan-run": plan_run(**python_arguments(plan_run, inputs))._asdict()}
    outputs["final-train"] = {"Output": "final-run-id"}
    pods = {"plan-run": plan_pod}
    for name in ("start-pipeline-run", "load-data", "select-best", "final-train", "register-lineage"):
        pods[name] = pod_fields(spec, platform, [BODY, name], values, outputs)
    pods["end-pipeline-run"] = pod_fields(spec, platform, ["end-pipeline-run"], values, outputs)
    for worker in outputs["plan-run"]["Output"]:
        pods[f"hpo-trial-{worker}"] = pod_fields(spec, platform, TRIAL, values, outputs, loop_item=worker)
        _, trial_inputs = task_inputs(spec, TRIAL, values, outputs, loop_item=worker)
        assert trial_inputs["worker"] == worker
    return pods
