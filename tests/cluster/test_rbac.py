"""RBAC, least privilege, answered by the API server (`kubectl auth can-i --as`): the accounts KFP runs pipeline
pods as (standalone `pipeline-runner` in kubeflow, multi-user `default-editor` in a profile namespace) may do what
the pipeline and the multi-node launcher do and nothing else asked here; the PyTorchJob pods' own account may
do nothing. KFP's own grants (its launcher reads the kfp-launcher ConfigMap and the artifact store's Secret) are
AN EMULATION of what KFP's install gives those accounts: no KFP runs here."""

from __future__ import annotations

import json

import pytest
from support.cluster import MODES, kubectl

ACCOUNTS = {"kfp-standalone": "pipeline-runner", "kfp-multi-user": "default-editor"}
# (verb, resource, name): what the pipeline's code (resume_ner.k8s.pytorchjob) and KFP's launcher need
NEEDED = [
    *[(verb, "pytorchjobs.kubeflow.org", "") for verb in ("create", "get", "list", "watch", "delete")],
    ("get", "pytorchjobs.kubeflow.org/status", ""),
    *[(verb, "pods", "") for verb in ("get", "list", "watch")],
    ("get", "pods/log", ""),
    ("get", "configmaps", "kfp-launcher"),
    ("get", "secrets", "mlpipeline-minio-artifact"),
]
# what none of them may do: cluster-wide writes, another namespace's Secrets, exec into pods, the services
FORBIDDEN = [("create", "namespaces", ""), ("create", "clusterrolebindings", ""), ("patch", "nodes", ""),
             ("create", "pods/exec", ""), ("delete", "deployments", "")]
ELSEWHERE = [("get", "secrets", "resume-ner-mlflow-backend"), ("create", "pytorchjobs.kubeflow.org", "")]


def _emulated_kfp_grants(namespace: str, account: str) -> list[dict]:
    """AN EMULATION of KFP's install in ``namespace``: the account it runs pipeline pods as, the launcher's
    ConfigMap and artifact Secret, and a Role that lets the account read them."""
    meta = {"namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, **meta}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kfp-launcher", **meta},
         "data": {"defaultPipelineRoot": "minio://mlpipeline/v2/artifacts"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlpipeline-minio-artifact", **meta},
         "stringData": {"accesskey": "emulated", "secretkey": "emulated"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "kfp-emulated", **meta},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["kfp-launcher"]},
                   {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                    "resourceNames": ["mlpipeline-minio-artifact"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "kfp-emulated", **meta},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kfp-emulated"},
         "subjects": [{"kind": "ServiceAccount", "name": account}]},
    ]


@pytest.fixture(scope="module")
def kfp_namespaces(applied) -> dict[str, str]:
    for mode, namespace in MODES.items():
        kubectl(applied, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": _emulated_kfp_grants(namespace, ACCOUNTS[mode])}))
    return applied


def _can(env: dict[str, str], who: str, namespace: str, verb: str, resource: str, name: str) -> bool:
    """``kubectl auth can-i``: ``resource`` may name a subresource (``pods/log``), ``name`` an object."""
    kind, _, subresource = resource.partition("/")
    target = [f"{kind}/{name}" if name else kind, *([f"--subresource={subresource}"] if subresource else [])]
    answer = kubectl(env, "auth", "can-i", verb, *target, "-n", namespace, "--as", who, check=False)
    return answer.stdout.strip() == "yes"


def rbac_problems(env: dict[str, str], mode: str) -> list[str]:
    """Everything KFP's account of ``mode`` may not do but needs, or may do but must not, each with its rule."""
    namespace, who = MODES[mode], f"system:serviceaccount:{MODES[mode]}:{ACCOUNTS[mode]}"
    problems = [f"{who} cannot {verb} {resource}{'/' + name if name else ''} in {namespace}: the Role "
                "resume-ner-pipeline (manifests/pipeline/role.yaml) or KFP's own grants must allow it"
                for verb, resource, name in NEEDED if not _can(env, who, namespace, verb, resource, name)]
    problems += [f"{who} can {verb} {resource} in {namespace}, which it must not" for verb, resource, name in FORBIDDEN
                 if _can(env, who, namespace, verb, resource, name)]
    problems += [f"{who} can {verb} {resource}{'/' + name if name else ''} in resume-ner, which it must not"
                 for verb, resource, name in ELSEWHERE if _can(env, who, "resume-ner", verb, resource, name)]
    return problems


@pytest.mark.parametrize("mode", sorted(MODES))
def test_kfps_account_may_do_what_the_pipeline_needs_and_nothing_more(kfp_namespaces, mode):
    assert rbac_problems(kfp_namespaces, mode) == []


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_pytorchjob_pods_account_may_do_nothing(kfp_namespaces, mode):
    namespace = MODES[mode]
    who = f"system:serviceaccount:{namespace}:resume-ner-trainer"
    allowed = [f"{verb} {resource}" for verb, resource, name in NEEDED + FORBIDDEN
               if _can(kfp_namespaces, who, namespace, verb, resource, name)]
    assert allowed == []


def test_a_missing_rule_is_named(kfp_namespaces):
    """The check fails, naming the rule, when the shipped Role loses one (then the Role is put back)."""
    role = json.loads(kubectl(kfp_namespaces, "get", "role", "resume-ner-pipeline", "-n", "kubeflow", "-o", "json").stdout)
    trimmed = {**role, "rules": [{**rule, "resources": [r for r in rule["resources"] if r != "pods/log"]}
                                 for rule in role["rules"]]}
    trimmed["metadata"] = {k: v for k, v in role["metadata"].items() if k in ("name", "namespace", "labels")}
    kubectl(kfp_namespaces, "apply", "-f", "-", stdin=json.dumps(trimmed))
    try:
        assert rbac_problems(kfp_namespaces, "kfp-standalone") == [
            "system:serviceaccount:kubeflow:pipeline-runner cannot get pods/log in kubeflow: the Role "
            "resume-ner-pipeline (manifests/pipeline/role.yaml) or KFP's own grants must allow it"]
    finally:
        role["metadata"] = {k: v for k, v in role["metadata"].items() if k in ("name", "namespace", "labels")}
        kubectl(kfp_namespaces, "apply", "-f", "-", stdin=json.dumps(role))
    assert rbac_problems(kfp_namespaces, "kfp-standalone") == []
