"""The reliability suite's tallies: kills survived, restarts and fuzz examples, printed in the summary line.

Tests add to them through the ``reliability_counter`` fixture (``reliability_counter("kills", 1)``), and add
measured figures through ``reliability_figure`` (``reliability_figure("predict memory", "...")``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

KINDS = ("kills", "restarts", "fuzz examples", "outages")
_COUNTS: Counter[str] = Counter()
_FIGURES: dict[str, str] = {}


@pytest.fixture
def reliability_counter() -> Callable[[str, int], None]:
    """``count(kind, n)`` adds ``n`` to one of ``KINDS`` for the suite's summary line."""

    def count(kind: str, n: int = 1) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown reliability tally {kind!r}; one of {', '.join(KINDS)}")
        _COUNTS[kind] += n

    return count


@pytest.fixture
def reliability_figure() -> Callable[[str, str], None]:
    """``figure(name, text)`` adds a measured figure (e.g. memory growth) to the suite's summary line."""

    def figure(name: str, text: str) -> None:
        _FIGURES[name] = text

    return figure


@pytest.fixture(scope="module")
def dataset(synth_documents, tmp_path_factory) -> Path:
    """A dataset directory of synthetic resumes: 30 train, 6 validation, 4 test."""
    folder = tmp_path_factory.mktemp("data")
    for name, docs in (("train", synth_documents[:30]), ("validation", synth_documents[30:36]),
                       ("test", synth_documents[36:40])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d.to_doccano()) + "\n" for d in docs))
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line with every tally, when any reliability test ran."""
    if _COUNTS or _FIGURES:
        terminalreporter.write_line("reliability suite: " + ", ".join(
            [f"{_COUNTS[k]} {k}" for k in KINDS] + [f"{name} {text}" for name, text in _FIGURES.items()]))
