"""The project image built on this machine, for the container and cluster tiers: the Debian base of
images/base-image.sh (or $RESUME_NER_BASE_IMAGE where a registry is reachable), the wheelhouse of
images/wheelhouse.sh, then images/Dockerfile; cached layers make a second build quick."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_BASE_IMAGE = "resume-ner-base:bookworm"


def run_or_fail(command: list, env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (strings or paths) in the repository; a failure fails the test with the output's tails."""
    command = [str(part) for part in command]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}:\\n{done.stdout[-3000:]}\\n{done.stderr[-3000:]}")
    return done


def build_project_image(env: dict[str, str], figures: dict[str, str]) -> str:
    """Build the pipeline's image in the engine of ``env`` (DOCKER_HOST); its name. Adds each step's time and the
    image's size to ``figures``."""
    from resume_ner.config import load, resolve_image

    env = {**env, "DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx plugin, no frontend image to pull
    name = resolve_image(load())
    base = os.environ.get("RESUME_NER_BASE_IMAGE", LOCAL_BASE_IMAGE)
    if base == LOCAL_BASE_IMAGE:
        started = time.monotonic()
        said = run_or_fail([str(REPO / "images" / "base-image.sh"), base], env).stdout.strip().splitlines()[-1]
        figures["base"] = f"{time.monotonic() - started:.0f}s ({'cached' if 'already' in said else 'made'})"
    started = time.monotonic()
    said = run_or_fail([str(REPO / "images" / "wheelhouse.sh")], {**env, "PYTHON": str(REPO / ".venv/bin/python")})
    figures["wheelhouse"] = f"{time.monotonic() - started:.0f}s ({said.stdout.strip().splitlines()[-1]})"
    started = time.monotonic()
    run_or_fail(["docker", "build", "-q", "-f", "images/Dockerfile", "--build-arg", f"BASE_IMAGE={base}", "-t", name, "."],
         env)
    figures["build"] = f"{time.monotonic() - started:.0f}s"
    size = int(run_or_fail(["docker", "image", "inspect", "-f", "{{.Size}}", name], env).stdout)
    figures["image"] = f"{name} {size / 1e9:.2f} GB"
    return name
