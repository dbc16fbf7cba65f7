"""The JSON summary (``--dspy-json``): a ``RunReport`` as schema ``pytest-dspy-local/report`` version 1."""

from __future__ import annotations

from pathlib import Path

from pytest_dspy_local.core.files import stable_json, write_atomically
from pytest_dspy_local.core.results import RunReport


def write_json(path: Path, report: RunReport) -> None:
    """Write the JSON summary atomically."""
    write_atomically({path: stable_json(report.to_json()).encode()})
