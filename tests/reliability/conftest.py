"""The reliability suite's tallies: kills survived, restarts and fuzz examples, printed in the summary line.

Tests add to them through the ``reliability_counter`` fixture: ``reliability_counter("kills", 1)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

KINDS = ("kills", "restarts", "fuzz examples", "outages")
_COUNTS: Counter[str] = Counter()


@pytest.fixture
def reliability_counter() -> Callable[[str, int], None]:
    """``count(kind, n)`` adds ``n`` to one of ``KINDS`` for the suite's summary line."""

    def count(kind: str, n: int = 1) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown reliability tally {kind!r}; one of {', '.join(KINDS)}")
        _COUNTS[kind] += n

    return count


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line with every tally, when any reliability test ran."""
    if _COUNTS:
        terminalreporter.write_line("reliability suite: " + ", ".join(f"{_COUNTS[k]} {k}" for k in KINDS))
