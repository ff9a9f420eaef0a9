"""Admission on a real API server: every object of the kustomizations (the services of manifests/aks, what the
pipeline needs in each KFP mode's namespace) is admitted by a server-side dry run, then applied for real; the
PyTorchJob CRD admits the example job and the one `resume-ner k8s pytorchjob render` prints, and refuses one its
schema forbids."""

from __future__ import annotations

import subprocess
import sys

from support.cluster import MODES, REPO, kubectl, wait_for


def test_every_object_of_the_manifests_is_admitted_and_applied(applied):
    for directory, namespace in {"aks": "resume-ner", **MODES}.items():
        built = kubectl(applied, "kustomize", str(REPO / "manifests" / directory)).stdout
        names = [line.split()[0] for line in kubectl(applied, "apply", "--dry-run=server", "-f", "-",
                                                     stdin=built).stdout.splitlines()]
        assert names and all(kubectl(applied, "get", name, "-n", namespace, check=False).returncode == 0
                             for name in names if not name.startswith("namespace/")), names
    assert wait_for(lambda: kubectl(applied, "get", "pvc", "resume-ner-data", "-n", "kubeflow").returncode == 0)


def test_the_crd_admits_the_projects_pytorchjobs_and_refuses_what_its_schema_forbids(applied, tmp_path):
    example = (REPO / "manifests" / "examples" / "pytorchjob.yaml").read_text()
    kubectl(applied, "apply", "--dry-run=server", "-n", "kubeflow", "-f", "-", stdin=example)
    rendered = subprocess.run([sys.executable, "-m", "resume_ner.cli.main", "k8s", "pytorchjob", "render",
                               "--replicas", "3", "--set", "pipeline.volume_claim=resume-ner-data"],
                              capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    kubectl(applied, "apply", "--dry-run=server", "-f", "-", stdin=rendered)
    forbidden = example.replace("cleanPodPolicy: None", "cleanPodPolicy: Sometimes")
    refused = kubectl(applied, "apply", "--dry-run=server", "-n", "kubeflow", "-f", "-", stdin=forbidden, check=False)
    assert refused.returncode != 0 and "cleanPodPolicy" in refused.stderr and "Sometimes" in refused.stderr
