"""The KServe predictor container as `resume-ner k8s inferenceservice render` writes it, run by the real engine:
the project image, its command, arguments, environment and user, a read-only root with /tmp and home writable,
the MLflow model where KServe's storage initializer puts it (/mnt/models, read-only), listening on 8080 (host
network: the private engine has no bridge). It answers /ping and /invocations with the Predictor's entities and a
bad request with a 400, as `mlflow models serve` does outside the image."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from resume_ner.config import load
from resume_ner.inference import Predictor
from resume_ner.k8s.serving import build_inference_service
from resume_ner.serving.load import invocations_body, post_invocations
from resume_ner.serving.local_server import ping
from resume_ner.serving.mlflow_model import save_serving_model

PORT = 8080  # KServe: a custom predictor container serves on 8080 (pkg/constants/constants.go, v0.15.2)


URL = f"http://127.0.0.1:{PORT}"


def _post(body: bytes) -> tuple[int, dict]:
    status, answer = post_invocations(URL, body, timeout_s=120)
    return status, json.loads(answer)


def test_the_inferenceservice_container_serves_the_registered_model(docker_env, image, entity_model_dir,
                                                                    synth_documents, tmp_path: Path, tier_figures):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", PORT)) == 0:
            pytest.fail(f"port {PORT} is taken on this machine: the predictor container serves on it (host network)")
    saved = save_serving_model(entity_model_dir, tmp_path / "mlflow_model")
    for path in [saved, *saved.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the image's user reads what the initializer downloaded
    tmp_path.chmod(0o755)
    service = build_inference_service(load(), storage_uri="pvc://resume-ner-models/mlflow_model", image=image)
    [container] = service["spec"]["predictor"]["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] and context["runAsNonRoot"]
    name = f"resume-ner-predictor-{os.getpid()}"
    environment = [option for entry in container["env"] for option in ("-e", f"{entry['name']}={entry['value']}")]
    command = ["docker", "run", "-d", "--name", name, "--network", "host", "--read-only",
               "--user", f"{context['runAsUser']}:{context['runAsGroup']}", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "--tmpfs", "/tmp",
               "--tmpfs", "/home/resume-ner:uid=10001,gid=10001", "-v", f"{saved}:/mnt/models:ro", *environment,
               "--entrypoint", container["command"][0], image, *container["command"][1:], *container["args"]]
    started = time.monotonic()
    subprocess.run(command, env=docker_env, check=True, capture_output=True, timeout=120)
    try:
        while not ping(URL):
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], env=docker_env,
                                   capture_output=True, text=True).stdout.strip()
            logs = subprocess.run(["docker", "logs", "--tail", "40", name], env=docker_env, capture_output=True,
                                  text=True)
            assert state == "true", f"the predictor container exited:\n{logs.stdout}{logs.stderr}"
            assert time.monotonic() - started < 240, f"no /ping after 240 s:\n{logs.stdout}{logs.stderr}"
            time.sleep(1)
        tier_figures["predictor container up"] = f"{time.monotonic() - started:.0f}s"
        texts = [document.text for document in synth_documents[44:47]]
        status, answer = _post(invocations_body(texts))
        expected = [[entity.to_dict() for entity in found] for found in Predictor(entity_model_dir).predict(texts)]
        assert status == 200 and answer == {"predictions": [{"entities": entities} for entities in expected]}
        status, answer = _post(invocations_body([" "]))
        assert status == 400 and "row 0: text is empty" in answer["message"]
        assert ping(URL)
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=docker_env, capture_output=True, timeout=120)
        shutil.rmtree(saved, ignore_errors=True)
