"""The audit receipt (``--dspy-audit=PATH``): what each prompt item sent where, and the
``Auditor`` that runs each prompt item under the egress guard to collect it.

Per item: the endpoints contacted (``in-process`` for the embedded model, else
``host:port`` as seen by the egress guard), model calls and tokens, answers
served from the cache, blocked attempts, the model digest and the data hash.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_dspy_local.core.files import stable_json, write_atomically
from pytest_dspy_local.errors import PromptError, UsageError
from pytest_dspy_local.privacy.egress import BlockedAttempt, EgressGuard

if TYPE_CHECKING:
    from pytest_dspy_local.core.results import Traffic
    from pytest_dspy_local.core.settings import Settings


class TrafficSource(Protocol):
    """What the auditor reads from the run's models (``models.run_models.Models``)."""

    def counters(self) -> Traffic:
        """Model traffic so far."""
        ...

    def calls_by_endpoint(self) -> dict[str, int]:
        """Model calls so far per endpoint."""
        ...


def _endpoints(settings: Settings) -> list[tuple[str, str]]:
    """The model endpoints and the setting each comes from."""
    s = settings
    named = [(s.base_url, "--dspy-base-url"), (s.prompt_base_url, "--dspy-prompt-base-url"),
             (os.environ.get("OLLAMA_HOST"), "OLLAMA_HOST")]
    return [(url, name) for url, name in named if url]


def _as_url(endpoint: str) -> str:
    """An endpoint as a URL: Ollama takes ``host:port/path`` and ``:port`` without a scheme."""
    text = endpoint.strip()
    if "://" in text:
        return text
    return f"http://127.0.0.1{text}" if text.startswith(":") else f"http://{text}"


# Loopback listeners this process's own model engines opened (xllamacpp's in-process engine
# cannot run without one): process state, as the listeners themselves are.
_LISTENERS: dict[str, dict[str, str]] = {}


def record_listener(address: str, owner: str, protection: str) -> None:
    """Note, for the receipt, a listener a model engine in this process opened."""
    _LISTENERS[address] = {"address": address, "opened_by": owner, "protection": protection}


def listeners() -> list[dict[str, str]]:
    """The listeners recorded so far, by address (an xdist worker hands them to the controller)."""
    return [dict(_LISTENERS[address]) for address in sorted(_LISTENERS)]


def take_listeners(entries: Sequence[dict[str, str]]) -> None:
    """Add listeners another process recorded (an xdist worker's, on the controller)."""
    for entry in entries:
        record_listener(entry["address"], entry["opened_by"], entry["protection"])


def allowed_hosts(settings: Settings) -> list[str]:
    """Configured hosts plus the model endpoints (URLs are accepted as entries)."""
    return [*settings.allow_hosts, *(_as_url(url) for url, _ in _endpoints(settings))]


ENDPOINT_FIX = {
    "--dspy-base-url": "write it like http://127.0.0.1:8000/v1 in base_url ([tool.dspy_local], DSPY_LOCAL_BASE_URL "
                       "or --dspy-base-url)",
    "--dspy-prompt-base-url": "write it like http://127.0.0.1:8000/v1 in prompt_base_url ([tool.dspy_local], "
                              "DSPY_LOCAL_PROMPT_BASE_URL or --dspy-prompt-base-url)",
    "OLLAMA_HOST": "fix or unset the variable (e.g. OLLAMA_HOST=127.0.0.1:11434)",
}


def check_hosts(settings: Settings) -> None:
    """Reject an allow-list entry or model endpoint that is not a host, host:port, IP, network or URL
    (before any item runs), naming the setting it came from."""
    for entry in settings.allow_hosts:
        try:
            EgressGuard([entry], resolve_names=False)
        except ValueError as exc:
            raise UsageError(f"allow_hosts: {exc}; fix it in [tool.dspy_local] allow_hosts, DSPY_LOCAL_ALLOW_HOSTS "
                             "or --dspy-allow-hosts") from None
    for url, name in _endpoints(settings):
        try:
            EgressGuard([_as_url(url)], resolve_names=False)
        except ValueError:
            raise UsageError(f"{name}: {url!r} is not a server address; {ENDPOINT_FIX[name]}") from None

def check_target_hosts(settings: Settings, targets: Sequence[str]) -> None:
    """A target model on a non-loopback host must be allowed explicitly (its base_url is not enough)."""
    from urllib.parse import urlsplit

    guard = EgressGuard(allowed_hosts(settings), resolve_names=False)
    for name in targets:
        url = settings.targets[name].get("base_url")
        if not url:
            continue
        parts = urlsplit(url if "://" in url else f"//{url}")
        if parts.hostname and not guard.allows(parts.hostname, parts.port):
            raise UsageError(f"--dspy-target={name}: its server {parts.hostname} is not an allowed host, and a "
                             f"target's prompts and data would go there; add {parts.hostname!r} to [tool.dspy_local] "
                             "allow_hosts (or --dspy-allow-hosts) if that is intended")


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
    traffic: Traffic
    blocked: list[dict[str, Any]]
    model: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_attempts(
        cls, nodeid: str, contacted: dict[str, int], traffic: Traffic, attempts: Sequence[BlockedAttempt]
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
        "listeners": listeners(),
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


def blocked_message(attempts: Sequence[BlockedAttempt], allowed: str) -> str:
    """One line naming the first refused host and the code that tried."""
    first = attempts[0]
    more = f" (and {len(attempts) - 1} more)" if len(attempts) > 1 else ""
    return (
        f"dspy-local blocked a connection to {first.endpoint} ({first.event}) from {first.where} in "
        f"{first.function}{more}: not in the allowed hosts ({allowed}); add it to allow_hosts in "
        "[tool.dspy_local] if it is intended"
    )


class Auditor:
    """The run's egress guard and the receipt entries of the items it watched."""

    def __init__(self, settings: Settings, models: TrafficSource, *, block: bool) -> None:
        self.settings = settings
        self.models = models
        self.block = block
        self.items: list[dict[str, Any]] = []
        self._guard: EgressGuard | None = None

    def guard(self) -> EgressGuard:
        """The egress guard, built on first use (it resolves allowed host names once)."""
        if self._guard is None:
            try:
                self._guard = EgressGuard(allowed_hosts(self.settings), block=self.block)
            except ValueError as exc:
                raise PromptError(f"allow_hosts: {exc}") from None
        return self._guard

    @contextmanager
    def audited(self, nodeid: str) -> Iterator[ItemAudit]:
        """Run a block under the egress guard; record its receipt entry; fail it on a blocked attempt."""
        guard, before, calls_before, error = self.guard(), self.models.counters(), self.models.calls_by_endpoint(), None
        from pytest_dspy_local.core.results import Traffic  # imported here: a run without prompts never needs it

        entry = ItemAudit(nodeid, {}, Traffic(), [])
        try:
            with guard.active(nodeid):
                yield entry
        except BaseException as exc:  # re-raised below, after the record is made
            error = exc
        attempts = guard.take(nodeid)
        done = ItemAudit.from_attempts(nodeid, guard.take_contacted(nodeid), self.models.counters() - before, attempts)
        for endpoint, calls in self.models.calls_by_endpoint().items():
            # A kept-alive connection makes no new connect event: count calls at the engine too.
            if calls > calls_before.get(endpoint, 0):
                done.endpoints[endpoint] = done.endpoints.get(endpoint, 0) + calls - calls_before.get(endpoint, 0)
        done.model, done.data = entry.model, entry.data
        self.items.append(done.as_dict())
        blocked = [a for a in attempts if a.blocked]
        if blocked:
            raise PromptError(blocked_message(blocked, guard.describe_allowed())) from None
        if error is not None:
            raise error

    def totals(self) -> tuple[int, int]:
        """Model calls made and answered from the cache over every watched item."""
        return sum(int(i["model_calls"]) for i in self.items), sum(int(i["cached_answers"]) for i in self.items)

    def write(self, path: Path) -> None:
        """Write the receipt."""
        write_receipt(path, receipt(self.items, allowed_hosts(self.settings), self.block))
