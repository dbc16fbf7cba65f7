"""Progress lines for long prompt items: examples done / total, score so far, rate, time left.

Lines, never carriage returns, so CI logs stay readable; more often on a terminal than in a
log; none with ``-q`` or on an xdist worker (the controller shows results as they arrive).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from pytest_dspy_local.core.results import ExampleResult

# (seconds before the first line, seconds between lines) on a terminal and in a log.
TERMINAL_PACE = (2.0, 2.0)
LOG_PACE = (10.0, 30.0)


def terminal_writer(config: pytest.Config) -> Callable[[str], None] | None:
    """A function that writes one line to the terminal past output capture, or None when quiet."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or hasattr(config, "workerinput"):
        return None

    def write(line: str) -> None:
        # Progress must reach the terminal while the item's output is being captured.
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return write


class EvaluationProgress:
    """Counts finished examples (from any thread) and writes a line now and then."""

    def __init__(self, write: Callable[[str], None], label: str, total: int, *, terminal: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write, self._label, self._total, self._clock = write, label, total, clock
        self._first, self._every = TERMINAL_PACE if terminal else LOG_PACE
        self._started = self._last = clock()
        self._done, self._score = 0, 0.0
        self._lock = threading.Lock()

    def __call__(self, example: ExampleResult) -> None:
        """Count one finished example; write a line when it is time."""
        with self._lock:
            self._done += 1
            self._score += example.score
            now = self._clock()
            if self._done == self._total or now - self._started < self._first or now - self._last < self._every:
                return
            self._last = now
            self._write(self.line(now))

    def line(self, now: float) -> str:
        """``triage: 40/100 examples, score so far 0.625, 3.2 examples/s, about 19s left``."""
        rate = self._done / max(now - self._started, 1e-9)
        left = (self._total - self._done) / rate
        return (f"dspy-local {self._label}: {self._done}/{self._total} examples, score so far "
                f"{self._score / self._done:.3f}, {rate:.1f} examples/s, about {left:.0f}s left")


def progress_for(config: pytest.Config, label: str, total: int) -> Callable[[ExampleResult], None] | None:
    """The progress counter for one prompt item, or None when progress is not shown."""
    write = terminal_writer(config)
    if write is None or config.option.verbose < 0:
        return None
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return EvaluationProgress(write, label, total, terminal=bool(getattr(reporter, "isatty", False)))
