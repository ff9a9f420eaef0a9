"""Atomic file writes (write a temporary sibling, fsync, then rename, so no reader sees half a file), the one
rule for a command's output files, and the content digest of a file or directory.

Files are written with the permissions the umask gives (as ``open`` would), not the 0600 of a temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from resume_ner.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def open_atomic(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A handle (``mode`` "w" or "wb") on a temporary sibling of ``path``, renamed to ``path`` when the block ends
    without an error and removed when it raises: a reader sees the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    with open_atomic(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def check_outputs(outputs: Iterable[str | Path], *, inputs: Iterable[str | Path] = (), overwrite: bool = False) -> None:
    """The one rule for the files a command writes: never one of its ``inputs`` (even with ``overwrite``), and
    not an existing file unless ``overwrite``; a ``ConfigError`` names each such output, checked before any work."""
    sources = [Path(p) for p in inputs]
    problems, existing = [], []
    for output in map(Path, outputs):
        clash = next((source for source in sources if _is_or_is_in(output, source)), None)
        if clash is not None:
            where = f"is in the input directory {clash}" if clash.is_dir() else "is an input of this command"
            problems.append(f"{output} {where}: write the output somewhere else")
        elif output.exists() and not overwrite:
            existing.append(str(output))
    if existing:
        one = len(existing) == 1
        problems.append(
            f"{', '.join(existing)} already exist{'s' if one else ''}: pass --overwrite to replace "
            f"{'it' if one else 'them'}, or choose another output"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def _is_or_is_in(output: Path, source: Path) -> bool:
    """``output`` is the file ``source`` (by any path or link), or lies in the directory ``source``."""
    if output.exists() and source.exists() and os.path.samefile(output, source):
        return True
    resolved = output.resolve()
    return resolved == source.resolve() or (source.is_dir() and resolved.parent == source.resolve())


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def recover_dir(target: Path) -> Path:
    """Undo a crash between the two renames of ``replace_dir_atomic``: put the previous directory back.

    Returns the path of the ``.old`` sibling that ``replace_dir_atomic`` uses.
    """
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)
    return old


def replace_dir_atomic(staging: Path, target: Path) -> Path:
    """Move a fully written ``staging`` directory to ``target``, replacing an old one only after success."""
    staging, target = Path(staging), Path(target)
    old = recover_dir(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)
    return target


def is_under(path: str | Path, directory: str | Path) -> bool:
    """Whether ``path`` is ``directory`` or lies inside it (lexically, after normalising ``..``)."""
    return Path(os.path.normpath(path)).is_relative_to(Path(os.path.normpath(directory)))


def content_digest(path: Path) -> str:
    """sha256 hex digest of a file's bytes, or of a directory's files (relative paths and bytes, in path order):
    it changes whenever the content does, whatever the file times."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        name = "" if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
