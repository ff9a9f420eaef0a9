"""What a local pipeline run shows on the console, and the log file that keeps the rest.

kfp.local prints every task's executor input, its streamed output and its outputs (about 1,000 lines for the
default run). ``local_console(log_path)`` sends all of it to ``log_path`` and shows on the console one line per
task as it starts and as it ends (with its time), the training progress (epochs, trials), and every warning or
error; when a task fails, the end of its output follows. ``verbose=True`` shows everything, as kfp.local prints it.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import io
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO, cast

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_STARTED = re.compile(r"Executing task '([^']+)'")
TASK_ENDED = re.compile(r"Task '([^']+)' finished with status (\w+)")
PROGRESS = (
    re.compile(r"INFO\]: (epoch \d+: train loss .*)$"),  # the trainer, once per epoch
    re.compile(r"INFO\]: (final training of study \S+ trial #\d+) on .*$"),
    re.compile(r"\] (Trial \d+ finished with value: \S+?)(?: and parameters:.*)?$"),  # Optuna
    re.compile(r"\] (Trial \d+ pruned\..*)$"),
)
PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b|Error:")
FAILURE_TAIL_LINES = 40
INDENT = " " * 11  # under a task line's "HH:MM:SS  "


class ConsoleFilter(io.TextIOBase):
    """A text stream that writes every line to ``log`` and the lines a user follows a run by to ``console``."""

    def __init__(self, console: TextIO, log: TextIO) -> None:
        self._console, self._log = console, log
        self._partial = ""
        self._started: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._recent: collections.deque[str] = collections.deque(maxlen=FAILURE_TAIL_LINES)
        self._lock = threading.Lock()  # parallel tasks print from their own threads

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._console.flush()

    def close_line(self) -> None:
        """Write out a last line that has no newline."""
        with self._lock:
            if self._partial:
                self._line(ANSI.sub("", self._partial))
                self._partial = ""

    def _line(self, line: str) -> None:
        self._log.write(line + "\n")
        plain = line.strip()
        shown = self._shown(plain)
        self._recent.append(plain)
        if shown is not None:
            self._console.write(shown + "\n")
            self._console.flush()

    def _shown(self, plain: str) -> str | None:
        """The console's line for ``plain``, None when it stays in the log."""
        now = time.strftime("%H:%M:%S")
        started = TASK_STARTED.search(plain)
        if started:
            self._started[started.group(1)].append(time.monotonic())
            return f"{now}  {started.group(1)} started"
        ended = TASK_ENDED.search(plain)
        if ended:
            task, state = ended.groups()
            starts = self._started[task]
            took = f" in {time.monotonic() - starts.popleft():.1f}s" if starts else ""
            line = f"{now}  {task} {state}{took}"
            if state != "SUCCESS":
                tail = "\n".join(INDENT + recent for recent in self._recent)
                line += f"\n{INDENT}the end of its output:\n{tail}"
            return line
        for pattern in PROGRESS:
            progress = pattern.search(plain)
            if progress:
                return INDENT + progress.group(1)
        if PROBLEM.search(plain):
            return INDENT + plain
        return None


@contextlib.contextmanager
def local_console(log_path: Path, *, verbose: bool = False) -> Iterator[Path]:
    """Within the block, what is printed (stdout and stderr) goes to ``log_path`` and, filtered by
    ``ConsoleFilter`` (everything with ``verbose``), to the console. Yields ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console_out, console_err, console_print = sys.stdout, sys.stderr, builtins.print
    with open(log_path, "a", encoding="utf-8") as log:
        stream: _Tee | ConsoleFilter = _Tee(console_out, log) if verbose else ConsoleFilter(console_out, log)
        # both are io.TextIOBase streams with the writing half of TextIO, all that print and logging use
        sys.stdout = sys.stderr = cast(TextIO, stream)
        try:
            yield log_path
        finally:
            if isinstance(stream, ConsoleFilter):
                stream.close_line()
            sys.stdout, sys.stderr = console_out, console_err
            # kfp.local indents a task's output by patching print; parallel tasks can leave the patch behind
            builtins.print = console_print


class _Tee(io.TextIOBase):
    """A text stream that writes to the console and to the log."""

    def __init__(self, console: TextIO, log: TextIO) -> None:
        self._console, self._log = console, log

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._console.write(text)
        self._log.write(ANSI.sub("", text))
        return len(text)

    def flush(self) -> None:
        self._console.flush()
        self._log.flush()
