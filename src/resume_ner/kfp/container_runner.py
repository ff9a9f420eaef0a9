"""kfp.local's ``DockerRunner`` for the pipeline: every task in a container of the project image, as a KFP
launcher runs it (``sh -ec ... python3 -m kfp.dsl.executor_main`` under the image's entrypoint).

``check_component_image(image)`` refuses, with what is wrong, an image that is not in the Docker engine or that
cannot run a component: its entrypoint does not run the command it is given, or it lacks kfp or the library.
``container_runner(...)`` mounts every host path a run uses at the same path in the containers (the output
directory with the pipeline root, the Optuna storage and the workspace; the data; a local backbone; a sqlite or
file MLflow store), uses the host's network (an MLflow server on 127.0.0.1 is reachable), and runs the
containers as the image's user (UID 10001), to whom the output directory is handed when the host runs as root,
else as the host's user (so the host can read and remove what they write).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from resume_ner.config import ResumeNerConfig, TrackingConfig
from resume_ner.errors import ConfigError
from resume_ner.kfp.pipelines import compiled_config
from resume_ner.tracking.mlflow import given_tracking_uri

if TYPE_CHECKING:
    import docker
    import kfp.local

IMAGE_USER = 10001  # images/Dockerfile's USER
# What a component's container runs first (kfp's lightweight component command), reduced to its imports.
COMPONENT_PROBE = ["sh", "-ec", "python3 -c 'import kfp.dsl.executor_main, resume_ner'"]


def check_component_image(image: str, client: docker.DockerClient | None = None) -> None:
    """``ConfigError`` unless ``image`` is in the Docker engine and runs a KFP component's command under its own
    entrypoint, with kfp and the library importable."""
    import docker

    client = client or docker.from_env()
    try:
        attrs = client.images.get(image).attrs
    except docker.errors.ImageNotFound:
        raise ConfigError(
            f"image {image!r} is not in the Docker engine ({client.api.base_url}): build it with "
            "`make image` (images/README.md), or set $RESUME_NER_IMAGE to the image you built"
        ) from None
    entrypoint = attrs.get("Config", {}).get("Entrypoint")
    try:
        client.containers.run(image, COMPONENT_PROBE, remove=True, network_mode="none", stdout=False, stderr=True)
    except docker.errors.ContainerError as error:
        said = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        raise ConfigError(
            f"image {image!r} cannot run a KFP component: `{' '.join(COMPONENT_PROBE[:2])} ...` under its "
            f"entrypoint {entrypoint} exited {error.exit_status} ({said[-1] if said else 'no output'}). Its "
            "entrypoint must run the command it is given and python3 must import kfp and resume_ner: build it "
            "from images/Dockerfile (`make image`)"
        ) from None


def container_tracking_uri(tracking: TrackingConfig, output_dir: Path) -> str:
    """The MLflow URI of a run in containers: the one given (``given_tracking_uri``), else a sqlite store in
    ``output_dir``, which the containers' user can write (not the working directory's)."""
    given = given_tracking_uri(None, tracking)
    if given:
        return given
    (output_dir / "mlruns").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{output_dir / 'mlruns' / 'mlflow.db'}"


def container_runner(
    config: ResumeNerConfig, *, data_uri: str | Path, output_dir: Path, tracking_uri: str
) -> kfp.local.DockerRunner:
    """A ``DockerRunner`` for a local run of ``config``'s pipeline writing to ``output_dir`` (absolute), after
    ``check_component_image`` of the image the pipeline is compiled with."""
    import docker
    import kfp.local
    from docker.types import Mount

    image = compiled_config(config).pipeline.image
    client = docker.from_env()
    try:
        check_component_image(image, client)
    finally:
        client.close()
    paths = _host_paths(config, data_uri, output_dir, tracking_uri)
    mounts = [Mount(target=str(path), source=str(path), type="bind", read_only=read_only) for path, read_only in paths]
    arguments: dict[str, Any] = {"mounts": mounts, "network_mode": "host"}
    if os.getuid() == 0:  # the image's user writes: hand it the output directory, and only that
        elsewhere = [str(path) for path, read_only in paths if not read_only and path != output_dir]
        if elsewhere:
            raise ConfigError(
                f"as root, the containers run as the image's user {IMAGE_USER}, who may write only in "
                f"the output directory {output_dir}, not {', '.join(elsewhere)}: use an MLflow server "
                "(http://...) or a store in the output directory"
            )
        for path in (output_dir, *output_dir.rglob("*")):
            os.chown(path, IMAGE_USER, IMAGE_USER, follow_symlinks=False)
    else:
        arguments.update(user=f"{os.getuid()}:{os.getgid()}", environment={"HOME": "/tmp"})
    return kfp.local.DockerRunner(**arguments)


def _host_paths(
    config: ResumeNerConfig, data_uri: str | Path, output_dir: Path, tracking_uri: str
) -> list[tuple[Path, bool]]:
    """(host directory, read-only) of every path a run uses, the output directory first, none inside another."""
    wanted: list[tuple[Path, bool]] = [(output_dir, False)]
    data = Path(data_uri).resolve()
    wanted.append((data if data.is_dir() else data.parent, True))
    backbone = Path(config.model.backbone)
    if backbone.is_dir():
        wanted.append((backbone.resolve(), True))
    store = _local_store(tracking_uri)
    if store is not None:
        wanted.append((store, False))
    kept: list[tuple[Path, bool]] = []
    for path, read_only in wanted:
        if not any(path == other or path.is_relative_to(other) for other, _ in kept):
            kept.append((path, read_only))
    return kept


def _local_store(tracking_uri: str) -> Path | None:
    """The host directory of a local MLflow store (a sqlite database's directory, a file store), None for a
    server; ``ConfigError`` for a relative one, which a container would look for in its own working directory."""
    if tracking_uri.startswith("sqlite:///"):
        directory = Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0]).parent
    elif tracking_uri.startswith("file:"):
        directory = Path(urlparse(tracking_uri).path)
    elif tracking_uri and "://" not in tracking_uri:
        directory = Path(tracking_uri)
    else:
        return None
    if not directory.is_absolute():
        raise ConfigError(
            f"MLflow store {tracking_uri!r} is relative to this directory, which the containers do "
            "not share: give its absolute path (sqlite:////ABSOLUTE/PATH/mlflow.db)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return directory
