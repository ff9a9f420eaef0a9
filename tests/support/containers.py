"""Helpers of the container tier (tests/containers): whether a Docker engine answers, and a container run as the
pipeline's pods run (read-only root, writable /tmp and home, no network)."""

from __future__ import annotations

import shutil
import subprocess


def engine_answers(env: dict[str, str]) -> bool:
    """Whether the Docker engine of ``env`` (``DOCKER_HOST``, else the default socket) answers."""
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "version"], env=env, capture_output=True,
                                                 timeout=60).returncode == 0


def docker_run(env: dict[str, str], image: str, *args: str, options: tuple[str, ...] = (),
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``docker run --rm`` of ``image`` with a read-only root and a writable /tmp and home, as the pods run it."""
    command = ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
               "--tmpfs", "/home/resume-ner:uid=10001,gid=10001", *options, image, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
