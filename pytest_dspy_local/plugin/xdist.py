"""The xdist hand-over: a worker sends its queued snapshots, receipt entries, the loopback
listeners its model engines opened, and unused snapshot files to the controller, which
writes everything once.

Prompt results travel separately, on each item's test report (see hooks.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_dspy_local.plugin.state import RunState
from pytest_dspy_local.privacy.audit import listeners, take_listeners

KEY = "dspy_local"


def handover(state: RunState) -> dict[str, Any]:
    """What a worker sends the controller (JSON-ready: xdist serializes it)."""
    return {
        "snapshots": {str(p): c.decode() for p, c in state.pending.items()},
        "audit": state.audit_items(),
        "listeners": listeners(),  # process state: the embedded engine's listener opened in the worker
        "unused": [str(p) for p in state.unused_snapshots()],
    }


def take_over(state: RunState, output: dict[str, Any]) -> None:
    """Controller side of ``handover``."""
    state.pending.update({Path(p): c.encode() for p, c in output.get("snapshots", {}).items()})
    if output.get("audit"):
        state.auditor.items += output["audit"]
    take_listeners(output.get("listeners", []))
    state.snapshot_files.update(Path(p) for p in output.get("unused", []))
