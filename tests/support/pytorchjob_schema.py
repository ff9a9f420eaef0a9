"""The project's strict schema of the Training Operator's PyTorchJob (pytorchjob_schema.json, which follows the
operator's Go types): ``assert_valid(job)`` for the unit tests, and ``pytorchjob_crd()``, the CRD (kubeflow.org/v1)
the cluster tier installs, built from it since the operator's own manifests cannot be fetched here.

An apiextensions.k8s.io/v1 schema must be structural: ``$ref`` is inlined, ``const`` becomes a one-value
``enum``, a quantity is ``x-kubernetes-int-or-string``, free-form objects (pod template specs, whose content
kubernetes-validate checks) preserve unknown fields, the root's metadata is left to the API server, and the
validating webhook's cross-field rules (``allOf`` / ``if`` / ``not``), which a 1.20 CRD cannot express, are
left to the unit tests of the schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

SCHEMA_FILE = Path(__file__).with_name("pytorchjob_schema.json")
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
K8S_VERSION = "1.34.0"  # an AKS-supported version; the manifests are validated against the same
_KEPT = ("description", "enum", "required", "minimum", "maximum", "pattern", "maxLength", "minProperties")
_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def assert_valid(job: dict[str, Any]) -> None:
    """The job passes the strict CRD schema, and each pod template the strict Kubernetes core/v1 schema."""
    jsonschema.Draft202012Validator(SCHEMA).validate(job)
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
                        "template": spec["template"]}
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def pytorchjob_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of pytorchjobs.kubeflow.org, version v1, with the status subresource."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    definitions = schema["$defs"]
    spec = _structural(schema["properties"]["spec"], definitions)
    root = {"type": "object", "required": ["spec"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"type": "object"}, "spec": spec,
                           "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "pytorchjobs.kubeflow.org"},
        "spec": {
            "group": "kubeflow.org",
            "scope": "Namespaced",
            "names": {"kind": "PyTorchJob", "listKind": "PyTorchJobList", "plural": "pytorchjobs",
                      "singular": "pytorchjob"},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": root}}],
        },
    }


def _structural(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _structural({**definitions[node["$ref"].rsplit("/", 1)[-1]],
                            **{k: v for k, v in node.items() if k != "$ref"}}, definitions)
    if "oneOf" in node:  # a quantity: an integer or a string
        return {"x-kubernetes-int-or-string": True, **{k: node[k] for k in ("description",) if k in node}}
    out: dict[str, Any] = {k: node[k] for k in _KEPT if k in node}
    if "const" in node:
        out["type"], out["enum"] = _TYPES[type(node["const"])], [node["const"]]
        return out
    out["type"] = node.get("type") or (_TYPES[type(node["enum"][0])] if "enum" in node else "object")
    if "properties" in node:
        out["properties"] = {name: _structural(child, definitions) for name, child in node["properties"].items()}
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], definitions)
    elif out["type"] == "object":
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in node:
        out["items"] = _structural(node["items"], definitions)
    return out
