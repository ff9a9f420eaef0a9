"""The project's exceptions. Each message says what is wrong, where, and how to fix it."""

from __future__ import annotations

import errno
from dataclasses import dataclass


class ResumeNerError(Exception):
    """Base class of every error the project raises on purpose; the CLI prints these without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One problem found in input data: where it is and what is wrong."""

    file: str
    line: int | None
    doc_id: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.doc_id is not None:
            where += f" (document {self.doc_id!r})"
        return f"{where}: {self.message}"


class DataValidationError(ResumeNerError):
    """Input data has one or more problems; ``problems`` lists every one of them."""

    max_shown = 20

    def __init__(self, problems: list[Problem], summary: str = "invalid input data") -> None:
        self.problems = list(problems)
        shown = self.problems[: self.max_shown]
        lines = [f"{summary}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


class ConfigError(ResumeNerError):
    """A configuration file, override or dict is invalid; the message lists every bad path."""


class CheckpointError(ResumeNerError):
    """A checkpoint directory is missing a file, truncated or inconsistent."""


class ModelLoadError(ResumeNerError):
    """A backbone or tokenizer cannot be loaded (offline, missing, or not a fast tokenizer)."""


class TrackingError(ResumeNerError):
    """Experiment tracking (MLflow) failed in a way the user must act on."""


def describe_os_error(exc: OSError) -> str:
    """A one-line account of a failed file operation: the path(s), then what the system said, with a plain
    name for a full disk and a read-only or forbidden location."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None) or "file operation"
    reason = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }.get(exc.errno or 0)
    return f"{paths}: {reason}" + (f" ({hint})" if hint and hint.lower() != reason.lower() else "")
