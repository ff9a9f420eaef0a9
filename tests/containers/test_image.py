"""The image itself: a non-root user on a read-only root file system, the CLI as its entrypoint, every other
command of the image run as given, and its size goal."""

from __future__ import annotations

from support.containers import docker_run

MAX_IMAGE_BYTES = 2.5e9  # the CPU image's goal


def test_the_image_runs_as_10001_on_a_read_only_root_with_a_writable_tmp(docker_env, image):
    done = docker_run(docker_env, image, "sh", "-ec", "id -u; id -g; touch /tmp/ok; touch /opt/venv/nope")
    assert done.returncode != 0  # the root file system is read-only
    assert done.stdout.split() == ["10001", "10001"]
    assert "Read-only file system" in done.stderr


def test_the_cli_is_the_entrypoint_and_other_commands_run_as_given(docker_env, image):
    helped = docker_run(docker_env, image)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: resume-ner")
    version = docker_run(docker_env, image, "--version")
    assert version.returncode == 0 and version.stdout.startswith("resume-ner ")
    python = docker_run(docker_env, image, "python3", "-c", "import kfp, resume_ner, torch; print(torch.__version__)")
    assert python.returncode == 0 and python.stdout.strip().startswith("2.13.0"), python.stderr


def test_the_image_meets_its_size_goal(docker_env, image):
    import subprocess

    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image], env=docker_env,
                              capture_output=True, text=True, check=True).stdout)
    assert size <= MAX_IMAGE_BYTES, f"{image} is {size / 1e9:.2f} GB, over the {MAX_IMAGE_BYTES / 1e9} GB goal"
