"""The project's strict schema of KServe's InferenceService (inferenceservice_schema.json), derived from KServe's own
CRD, and ``assert_valid(service)`` for the unit tests.

Source: github.com/kserve/kserve, tag v0.15.2 (commit d623ea29e4a7312e509829f9104209cd6f820268),
config/crd/full/serving.kserve.io_inferenceservices.yaml (git blob 8a742fe46180f1e9770e5bc0bcdbb575c70073d2), version
v1beta1. ``schema_from_crd`` made the JSON from it; to follow a new KServe release, fetch that file at the release's tag
and run ``cd tests && python -m support.inferenceservice_schema CRD.yaml TAG COMMIT`` (then review the diff).

The CRD is structural (no field preserves unknown fields below ``spec``), so the API server keeps only the fields it
names: every object here has ``additionalProperties: false`` (a map keeps its value schema), types, enums, patterns and
``required`` as the CRD has them, int32/int64 formats as ranges. Pruned, so narrower than the CRD and never wider:
``status`` (not part of a manifest), ``spec.transformer`` and ``spec.explainer``, and the predictor's framework
shorthands (``sklearn``, ``pytorch``, ...) and ``workerSpec``, none of which the project renders, are left out and
refused as unknown fields. Added from KServe's validating webhook (pkg/apis/serving/v1beta1/
inference_service_validation.go and component.go at the same tag): the name rule (``IsvcNameFmt``), exactly one
implementation in the predictor (``model``, else a container named ``kserve-container`` or a first container), a
custom container's ``PROTOCOL`` of v1 or v2, and no ``STORAGE_URI`` on a ``transformer-container``. The predictor's
pod fields are also checked against the strict Kubernetes core/v1 schema (kubernetes-validate), as
tests/unit/k8s/test_manifests.py checks every other pod.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMA_FILE = Path(__file__).with_name("inferenceservice_schema.json")
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
K8S_VERSION = "1.34.0"  # as tests/unit/k8s/test_manifests.py and support/pytorchjob_schema.py
KSERVE_TAG = "v0.15.2"
KSERVE_COMMIT = "d623ea29e4a7312e509829f9104209cd6f820268"
CRD_PATH = "config/crd/full/serving.kserve.io_inferenceservices.yaml"
# The predictor's fields that are KServe's own (ComponentExtensionSpec, the implementations); the rest is a PodSpec
KSERVE_FIELDS = frozenset({
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
    "deploymentStrategy", "model", "workerSpec", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx",
    "pmml", "lightgbm", "paddle", "huggingface",
})
MODEL_FIELDS = frozenset({"modelFormat", "protocolVersion", "runtime", "runtimeVersion", "storage", "storageUri"})
PRUNED_PREDICTOR_FIELDS = ("sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml", "lightgbm",
                           "paddle", "huggingface", "workerSpec")
_KEPT = ("type", "required", "enum", "pattern", "maxLength", "minLength", "minimum", "maximum", "minItems", "maxItems")
_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_MIN_SHARED_SIZE = 300  # a subschema at least this long (as JSON) that occurs twice goes to $defs


def assert_valid(service: dict[str, Any]) -> None:
    """The InferenceService passes the strict schema of the CRD and the webhook's rules, and the predictor's pod
    fields (with ``model`` as a container, when there is one) the strict Kubernetes core/v1 schema."""
    jsonschema.Draft202012Validator(SCHEMA).validate(service)
    predictor = service["spec"]["predictor"]
    pod = {key: value for key, value in predictor.items() if key not in KSERVE_FIELDS}
    if "model" in predictor:
        model = {key: value for key, value in predictor["model"].items() if key not in MODEL_FIELDS}
        pod["containers"] = [*pod.get("containers", []), {"name": "kserve-container", **model}]
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": {"spec": pod}}
    kubernetes_validate.validate(template, K8S_VERSION, strict=True)


def schema_from_crd(crd: dict[str, Any], *, tag: str, commit: str) -> dict[str, Any]:
    """The strict JSON Schema (draft 2020-12) of an InferenceService, from KServe's CRD ``crd`` (see the module's
    docstring for what is kept, pruned and added)."""
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    predictor = _convert(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["predictor"])
    for field in PRUNED_PREDICTOR_FIELDS:
        del predictor["properties"][field]
    definitions: dict[str, Any] = {}
    predictor = _share(predictor, definitions)
    predictor["allOf"] = _webhook_rules()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://resume-ner.local/schemas/serving.kserve.io/v1beta1/inferenceservice.json",
        "title": f"InferenceService (serving.kserve.io/v1beta1), as KServe {tag} defines it",
        "description": (
            f"Derived by tests/support/inferenceservice_schema.py from github.com/kserve/kserve {tag} ({commit}) "
            f"{CRD_PATH}: strict where the CRD is structural; status, transformer, explainer, the framework "
            "shorthands and workerSpec pruned; the name, one-implementation, PROTOCOL and transformer STORAGE_URI "
            "rules of its validating webhook added."
        ),
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": {"$ref": "#/$defs/ObjectMeta"},
            "spec": {
                "type": "object",
                "required": ["predictor"],
                "additionalProperties": False,
                "properties": {"predictor": {"$ref": "#/$defs/PredictorSpec"}},
            },
        },
        "$defs": {"ObjectMeta": _object_meta(), "PredictorSpec": predictor, **dict(sorted(definitions.items()))},
    }


def _convert(node: dict[str, Any]) -> dict[str, Any]:
    """One node of the CRD's OpenAPI v3 schema as strict JSON Schema."""
    out = {key: node[key] for key in _KEPT if key in node}
    if node.get("format") in _RANGES and node.get("type") == "integer":
        out["minimum"], out["maximum"] = _RANGES[node["format"]]
    if "anyOf" in node:  # int-or-string
        out["anyOf"] = [_convert(child) for child in node["anyOf"]]
    if "properties" in node:
        out["properties"] = {name: _convert(child) for name, child in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"])
    elif node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if "items" in node:
        out["items"] = _convert(node["items"])
    return out


def _share(predictor: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """``predictor`` with each subschema that occurs more than once replaced by a ``$ref`` to one in ``definitions``,
    named after the first property that holds it."""
    counts: collections.Counter[str] = collections.Counter()

    def count(node: Any) -> None:
        if isinstance(node, dict):
            counts[json.dumps(node, sort_keys=True)] += 1
            for child in node.values():
                count(child)
        elif isinstance(node, list):
            for child in node:
                count(child)

    count(predictor)
    shared = {text for text, n in counts.items() if n > 1 and len(text) >= _MIN_SHARED_SIZE}
    names: dict[str, str] = {}

    def reference(node: Any, name: str | None) -> Any:
        text = json.dumps(node, sort_keys=True) if isinstance(node, dict) else ""
        if name is None or text not in shared:
            return children(node, name)
        if text not in names:
            unique, suffix = name, 2
            while unique in definitions:
                unique, suffix = f"{name}{suffix}", suffix + 1
            names[text] = unique
            definitions[unique] = {}
            definitions[unique] = children(node, unique)
        return {"$ref": f"#/$defs/{names[text]}"}

    def children(node: Any, name: str | None) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties":
                out[key] = {child: reference(schema, child) for child, schema in value.items()}
            elif key == "items":
                out[key] = reference(value, f"{name}Item" if name else None)
            elif key == "additionalProperties" and isinstance(value, dict):
                out[key] = reference(value, f"{name}Value" if name else None)
            elif key == "anyOf":
                out[key] = [reference(child, None) for child in value]
            else:
                out[key] = value
        return out

    return children(predictor, None)


def _object_meta() -> dict[str, Any]:
    """What a manifest's metadata may hold here; the name as KServe's webhook wants it (IsvcNameFmt)."""
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 63, "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"},
            "namespace": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "labels": string_map,
            "annotations": string_map,
        },
    }


def _webhook_rules() -> list[dict[str, Any]]:
    """The validating webhook's rules on the predictor that the schema can say."""
    named = {"type": "object", "required": ["name"], "properties": {"name": {"const": "kserve-container"}}}
    return [
        {  # exactly one implementation: model, or containers (which count once), not both with kserve-container
            "anyOf": [{"required": ["model"]},
                      {"required": ["containers"], "properties": {"containers": {"minItems": 1}}}],
            "not": {"required": ["model", "containers"], "properties": {"containers": {"contains": named}}},
        },
        {  # CustomPredictor.validateCustomProtocol: the first container's PROTOCOL, if any, is v1 or v2
            "properties": {"containers": {"prefixItems": [{"properties": {"env": {"items": {
                "if": {"required": ["name"], "properties": {"name": {"const": "PROTOCOL"}}},
                "then": {"properties": {"value": {"enum": ["v1", "v2"]}}, "required": ["value"]},
            }}}}]}},
        },
        {  # validateCollocationStorageURI: no STORAGE_URI on the transformer container
            "properties": {"containers": {"items": {
                "if": {"required": ["name"], "properties": {"name": {"const": "transformer-container"}}},
                "then": {"properties": {"env": {"not": {"contains": {
                    "required": ["name"], "properties": {"name": {"const": "STORAGE_URI"}}}}}}},
            }}},
        },
    ]


if __name__ == "__main__":
    crd_file, tag, commit = sys.argv[1:4]
    schema = schema_from_crd(yaml.safe_load(Path(crd_file).read_text(encoding="utf-8")), tag=tag, commit=commit)
    SCHEMA_FILE.write_text(json.dumps(schema, indent=1) + "\n", encoding="utf-8")
