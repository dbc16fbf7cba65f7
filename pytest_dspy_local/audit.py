"""The audit receipt (``--dspy-audit=PATH``): what each prompt item sent where.

Per item: the endpoints contacted (``in-process`` for the embedded model, else
``host:port`` as seen by the egress guard), model calls and tokens, answers
served from the cache, blocked attempts, the model digest and the data hash.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dspy_local.egress import BlockedAttempt
from pytest_dspy_local.engine import Counters
from pytest_dspy_local.snapshot import stable_json, write_atomically

RECEIPT_VERSION = 1
COVERAGE = (
    "Connections and name lookups made through Python's socket module (audit hooks), in this "
    "process and its threads, while prompt items and dspy_lm tests ran. Not covered: sockets "
    "opened by native code without Python, child processes, and anything outside those items."
)


@dataclass
class ItemAudit:
    """One prompt item's (or dspy_lm test's) entry in the receipt."""

    nodeid: str
    endpoints: dict[str, int]
    traffic: Counters
    blocked: list[dict[str, Any]]
    model: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_attempts(
        cls, nodeid: str, contacted: dict[str, int], traffic: Counters, attempts: Sequence[BlockedAttempt]
    ) -> ItemAudit:
        """Build an entry from what the egress guard saw."""
        blocked = [
            {"endpoint": a.endpoint, "event": a.event, "where": a.where, "function": a.function, "blocked": a.blocked}
            for a in attempts
        ]
        return cls(nodeid, dict(sorted(contacted.items())), traffic, blocked)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "nodeid": self.nodeid,
            "endpoints": self.endpoints,
            "model_calls": self.traffic.calls,
            "cached_answers": self.traffic.cached,
            "prompt_tokens": self.traffic.prompt_tokens,
            "completion_tokens": self.traffic.completion_tokens,
            "blocked_attempts": self.blocked,
            "model": self.model,
            "data": self.data,
        }


def receipt(items: Sequence[dict[str, Any]], allowed: Sequence[str], blocking: bool) -> dict[str, Any]:
    """The whole receipt document."""
    from importlib.metadata import version

    return {
        "receipt_version": RECEIPT_VERSION,
        "plugin": {"pytest-dspy-local": version("pytest-dspy-local"), "python": platform.python_version()},
        "allowed_hosts": ["loopback", *allowed],
        "blocking": blocking,
        "coverage": COVERAGE,
        "items": sorted(items, key=lambda item: str(item["nodeid"])),
        "totals": {
            "model_calls": sum(int(i["model_calls"]) for i in items),
            "cached_answers": sum(int(i["cached_answers"]) for i in items),
            "blocked_attempts": sum(len(i["blocked_attempts"]) for i in items),
            "endpoints": sorted({e for i in items for e in i["endpoints"]}),
        },
    }


def write_receipt(path: Path, document: dict[str, Any]) -> None:
    """Write the receipt atomically."""
    write_atomically({path: stable_json(document).encode()})
