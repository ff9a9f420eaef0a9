"""AN EMULATION (not the backend) of what the Kubeflow Pipelines 2.17 backend's driver does with a compiled spec.

No KFP backend can run here (its Go modules cannot be fetched), so the rules our pipeline depends on are read from
the backend's source (``kubeflow/pipelines`` at tag 2.17.0, ``backend/src/v2/``) and reproduced in the few lines
below, each with the file and lines it follows. The emulation covers what our tasks use: input parameter
resolution through the DAGs, the pod-spec patch (resources, accelerator, node selector, tolerations, Secrets as
environment variables, container environment, PVC mounts) and the cache key's parameter part.

* Inputs: ``componentInputParameter`` from the parent DAG's inputs, ``taskOutputParameter`` from the producer's
  outputs, ``runtimeValue.constant`` as written (driver/resolve.go:390-440). A value keeps the kind its source
  gives it; only an input the component *declares* STRING is turned into text (resolve.go:202-217), so a
  ``pipelinechannel--`` input added for a placeholder keeps a number a number.
* Pod resources: the ``resource*`` string field, a placeholder resolved with ``GetStringValue()`` (empty for a
  non-string: resolve.go:818-831), else the deprecated float (driver.go:173-197); the quantity must parse, so
  an empty one fails the task (driver.go:191). The accelerator limit is set only when type and count are both
  non-empty (driver.go:415-447), so an empty count silently sets none.
* Node selector: ``labels``, or ``nodeSelectorJson`` resolved as a struct; null skips it, ``{}`` sets none
  (driver/k8s.go:194-222). Tolerations: constants, or ``tolerationJson`` resolved as a struct or a list; an
  empty one sets none, any other kind fails (k8s.go:224-299).
* Secrets as env: ``secretKeyRef`` with ``optional`` as compiled (k8s.go:347-393; honoured since 2.15.0).
* Container env: copied verbatim, placeholders not resolved (driver.go:290-293, 467-468).
* PVC mounts: a volume per claim mounted at its path; the name must resolve to a non-empty string
  (k8s.go:1111-1170).
* Cache key: every input parameter value and every input artifact's MLMD id, not its URI or content
  (cacheutils/cache.go:173-229).
"""

from __future__ import annotations

import json
import re
from typing import Any

# driver/util.go:41 (inputPipelineChannelPattern); the whole field is replaced by the value (resolve.go:818-831)
_CHANNEL = re.compile(r"\{\{\$\.inputs\.parameters\['(?P<name>[^']+)'\]\}\}")


class EmulatedDriverError(Exception):
    """The emulated driver fails the task, as the real one would (its error, its file)."""


def _text(value: Any) -> str:
    """metadata.PbValueToText: strings as they are, numbers without a trailing .0, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return json.dumps(value, separators=(",", ":"))


def get_string_value(value: Any) -> str:
    """structpb.Value.GetStringValue(): the string, or "" for any other kind."""
    return value if isinstance(value, str) else ""


def _resolve_parameter(spec: dict[str, Any], parent_inputs: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> Any:
    if "componentInputParameter" in spec:
        name = spec["componentInputParameter"]
        if name not in parent_inputs:
            raise EmulatedDriverError(f"parent DAG does not have input parameter {name}")
        return parent_inputs[name]
    if "taskOutputParameter" in spec:
        producer = spec["taskOutputParameter"]
        return outputs[producer["producerTask"]][producer["outputParameterKey"]]
    if "runtimeValue" in spec:
        return spec["runtimeValue"]["constant"]
    if "taskFinalStatus" in spec:
        return {"state": "COMPLETE", "pipelineTaskName": spec["taskFinalStatus"]["producerTask"], "error": {}}
    raise EmulatedDriverError(f"input kind of {spec} is not emulated")


def _with_defaults(component: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    values = dict(given)
    for name, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
        if name not in values and "defaultValue" in definition:
            values[name] = definition["defaultValue"]
    return values


def _declared_types(component: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """resolve.go:202-217: only inputs the component declares STRING are converted to text."""
    declared = component.get("inputDefinitions", {}).get("parameters", {})
    return {name: _text(value) if declared.get(name, {}).get("parameterType") == "STRING" else value
            for name, value in values.items()}


def task_inputs(
    spec: dict[str, Any], path: list[str], pipeline_values: dict[str, Any],
    outputs: dict[str, dict[str, Any]] | None = None, loop_item: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parent DAG inputs, the task's own inputs) of the task at ``path`` (DAG task names from the root, the task
    last) for a run with ``pipeline_values`` (defaults filled from the root's input definitions), upstream
    ``outputs`` (producer task -> output name -> value) and ``loop_item`` for a ParallelFor iteration."""
    outputs = outputs or {}
    parent_inputs = _with_defaults(spec["root"], pipeline_values)
    dag = spec["root"]["dag"]
    for depth, name in enumerate(path):
        task = dag["tasks"][name]
        component = spec["components"][task["componentRef"]["name"]]
        values = {key: _resolve_parameter(value, parent_inputs, outputs)
                  for key, value in task.get("inputs", {}).get("parameters", {}).items()}
        iterator = task.get("parameterIterator")
        if iterator:
            values[iterator["itemInput"]] = loop_item
        values = _declared_types(component, _with_defaults(component, values))
        if depth == len(path) - 1:
            return parent_inputs, values
        parent_inputs, dag = values, component["dag"]
    raise EmulatedDriverError("empty task path")


def _resolve_pod_spec_parameter(field: str, inputs: dict[str, Any]) -> str:
    """resolvePodSpecInputRuntimeParameter (resolve.go:818-831)."""
    match = _CHANNEL.search(field)
    if not match:
        return field
    if match["name"] not in inputs:
        raise EmulatedDriverError("executorInput did not contain container Image input parameter")
    return get_string_value(inputs[match["name"]])


def _quantity(text: str, what: str) -> str:
    """k8sres.ParseQuantity: "" and non-quantities fail the driver (driver.go:191-194)."""
    if not re.fullmatch(r"\d+(\.\d+)?(m|[KMGTPE]i?|[eE]\d+)?", text):
        raise EmulatedDriverError(f"failed to init podSpecPatch: {what}: quantities must match the regular "
                                  f"expression (got {text!r})")
    return text


def _pod_resource(new: str | None, old: float | None, inputs: dict[str, Any], old_format: str, what: str) -> str | None:
    """getPodResource (driver.go:173-197)."""
    if new:
        return _quantity(_resolve_pod_spec_parameter(new, inputs), what)
    if old:
        return _quantity(old_format.format(old), what)
    return None


def pod_fields(
    spec: dict[str, Any], platform: dict[str, Any], path: list[str], pipeline_values: dict[str, Any],
    outputs: dict[str, dict[str, Any]] | None = None, loop_item: Any = None,
) -> dict[str, Any]:
    """The pod fields the driver patches in for the task at ``path``: image, resources, nodeSelector,
    tolerations, env, volumes and volumeMounts."""
    outputs = outputs or {}
    parent_inputs, inputs = task_inputs(spec, path, pipeline_values, outputs, loop_item)
    dag = spec["root"]["dag"]
    for name in path[:-1]:
        dag = spec["components"][dag["tasks"][name]["componentRef"]["name"]]["dag"]
    component = spec["components"][dag["tasks"][path[-1]]["componentRef"]["name"]]
    label = component["executorLabel"]
    container = spec["deploymentSpec"]["executors"][label]["container"]
    resources = container.get("resources", {})
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    for target, key, new, old, old_format in (
            (limits, "memory", "resourceMemoryLimit", "memoryLimit", "{}G"),
            (requests, "memory", "resourceMemoryRequest", "memoryRequest", "{}G"),
            (limits, "cpu", "resourceCpuLimit", "cpuLimit", "{}"),
            (requests, "cpu", "resourceCpuRequest", "cpuRequest", "{}")):
        value = _pod_resource(resources.get(new), resources.get(old), inputs, old_format, f"{label}.{new}")
        if value is not None:
            target[key] = value
    accelerator = resources.get("accelerator")
    if accelerator:
        kind = (_resolve_pod_spec_parameter(accelerator["resourceType"], inputs) if accelerator.get("resourceType")
                else accelerator.get("type", ""))
        count = (_resolve_pod_spec_parameter(accelerator["resourceCount"], inputs) if accelerator.get("resourceCount")
                 else str(accelerator["count"]) if int(accelerator.get("count", 0)) > 0 else "")
        if kind and count:
            limits[kind] = _quantity(count, f"{label}.accelerator")
    pod: dict[str, Any] = {"image": _resolve_pod_spec_parameter(container["image"], inputs),
                           "resources": {"limits": limits, "requests": requests},
                           "env": [{"name": e["name"], "value": e["value"]} for e in container.get("env", [])],
                           "nodeSelector": {}, "tolerations": [], "volumes": [], "volumeMounts": []}
    config = platform.get(label, {})
    selector = config.get("nodeSelector", {})
    if "labels" in selector:
        pod["nodeSelector"] = dict(selector["labels"])
    elif "nodeSelectorJson" in selector:
        value = _resolve_parameter(selector["nodeSelectorJson"], parent_inputs, outputs)
        if value is not None:
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise EmulatedDriverError(f"failed to unmarshal node selector {value!r}")
            pod["nodeSelector"] = dict(value)
    for toleration in config.get("tolerations", []):
        if "tolerationJson" in toleration:
            value = _resolve_parameter(toleration["tolerationJson"], parent_inputs, outputs)
            if value is None:
                continue
            if isinstance(value, dict):
                value = [value] if value else []
            if not isinstance(value, list):
                raise EmulatedDriverError("toleration must be either struct or list type")
            pod["tolerations"] += [dict(t) for t in value]
        else:
            pod["tolerations"].append({k: toleration[k] for k in ("key", "operator", "value", "effect")
                                       if k in toleration})
    for secret in config.get("secretAsEnv", []):
        name = secret.get("secretName") or get_string_value(_resolve_parameter(
            secret["secretNameParameter"], parent_inputs, outputs))
        for entry in secret["keyToEnv"]:
            reference = {"name": name, "key": entry["secretKey"]}
            if "optional" in secret:
                reference["optional"] = secret["optional"]
            pod["env"].append({"name": entry["envVar"], "valueFrom": {"secretKeyRef": reference}})
    for mount in config.get("pvcMount", []):
        claim = mount.get("constant") or get_string_value(_resolve_parameter(
            mount["pvcNameParameter"], parent_inputs, outputs))
        if not claim or not mount.get("mountPath"):
            raise EmulatedDriverError("failed to resolve pvc name")
        pod["volumes"].append({"name": claim, "persistentVolumeClaim": {"claimName": claim}})
        pod["volumeMounts"].append({"name": claim, "mountPath": mount["mountPath"]})
    return pod


def cache_key_parameters(spec: dict[str, Any], path: list[str], pipeline_values: dict[str, Any],
                         outputs: dict[str, dict[str, Any]] | None = None) -> str:
    """The input-parameter part of the task's cache key, as JSON (cacheutils/cache.go:195-197): equal for two runs
    exactly when the backend would serve the second from the first's cache (same artifacts and image given)."""
    _, inputs = task_inputs(spec, path, pipeline_values, outputs)
    return json.dumps(inputs, sort_keys=True)
