"""Run state: the configured model, created on first use, and the results so far.

One ``RunState`` per pytest run, registered as a plugin and reached through
``STATE_KEY``; nothing about a run lives in module globals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dspy_local.backends.base import BackendError, ModelInfo
from pytest_dspy_local.config import ConfigError, Settings, for_prompt
from pytest_dspy_local.exceptions import PromptError

if TYPE_CHECKING:
    import dspy

    from pytest_dspy_local.audit import ItemAudit
    from pytest_dspy_local.data import Dataset, Row
    from pytest_dspy_local.egress import BlockedAttempt, EgressGuard
    from pytest_dspy_local.engine import BackendEngine, Counters
    from pytest_dspy_local.evaluation import EvalResult
    from pytest_dspy_local.optimization import Outcome
    from pytest_dspy_local.snapshot import SnapshotPaths
    from pytest_dspy_local.spec import PromptSpec


def import_dspy(cache_dir: Path) -> None:
    """Import DSPy with the plugin's environment: known leaks closed, a project-local cache."""
    from pytest_dspy_local.egress import close_known_leaks

    # Read when litellm / dspy are first imported, so they must be set before. DSPy's own
    # cache is not used by the plugin's LM; pointing it here keeps it out of $HOME too.
    close_known_leaks()
    os.environ.setdefault("DSPY_CACHEDIR", str(cache_dir / "dspy"))
    import dspy  # noqa: F401


def blocked_message(attempts: list[BlockedAttempt], allowed: str) -> str:
    """One line naming the first refused host and the code that tried."""
    first = attempts[0]
    more = f" (and {len(attempts) - 1} more)" if len(attempts) > 1 else ""
    return (
        f"dspy-local blocked a connection to {first.endpoint} ({first.event}) from {first.where} in "
        f"{first.function}{more}: not in the allowed hosts ({allowed}); add it to allow_hosts in "
        "[tool.dspy_local] if it is intended"
    )


class RunState:
    """The model and results of one pytest run."""

    def __init__(self, config: pytest.Config, settings: Settings, pinned: frozenset[str]) -> None:
        self.config = config
        self.settings = settings
        self.pinned = pinned
        self.skipped: list[tuple[Path, str]] = []
        self.entries: list[dict[str, Any]] = []
        self._engine: BackendEngine | None = None
        self._lm: dspy.LM | None = None
        self._info: ModelInfo | None = None
        self._error: str | None = None
        self._prompt_lm: dspy.LM | None = None
        self._prompt_engine: BackendEngine | None = None
        self.optimize_mode: str | None = config.getoption("dspy_optimize", None)
        self.update_baseline: bool = bool(config.getoption("dspy_update_baseline", False))
        self.pending: dict[Path, bytes] = {}
        self.written: list[Path] = []
        self.snapshot_files: set[Path] = set()
        self.audit_items: list[dict[str, Any]] = []
        self._guard: EgressGuard | None = None

    @property
    def cache_dir(self) -> Path:
        """The project-local answer cache (``cache_dir``, relative to the rootdir)."""
        return self.config.rootpath / self.settings.cache_dir

    def allowed_hosts(self) -> list[str]:
        """Configured hosts plus the model endpoints (URLs are accepted as entries)."""
        s = self.settings
        endpoints = [u for u in (s.base_url, s.prompt_base_url, os.environ.get("OLLAMA_HOST")) if u]
        return [*s.allow_hosts, *endpoints]

    def guard(self) -> EgressGuard:
        """The egress guard, built on first use (it resolves allowed host names once)."""
        if self._guard is None:
            from pytest_dspy_local.egress import EgressGuard

            try:
                self._guard = EgressGuard(self.allowed_hosts(), block=not self.config.getoption("dspy_allow_egress"))
            except ValueError as exc:
                raise PromptError(f"allow_hosts: {exc}") from None
        return self._guard

    def counters(self) -> Counters:
        """Model traffic so far over both models."""
        from pytest_dspy_local.engine import Counters

        total = Counters()
        for engine in (self._engine, self._prompt_engine):
            total = total + engine.counter if engine is not None else total
        return total

    def _calls_by_endpoint(self) -> dict[str, int]:
        # Model calls per endpoint: a kept-alive connection opened earlier makes no new
        # connect event, so the receipt counts calls at the engine, not only sockets.
        calls: dict[str, int] = {}
        for engine in (self._engine, self._prompt_engine):
            if engine is not None and engine.endpoint:
                calls[engine.endpoint] = calls.get(engine.endpoint, 0) + engine.counter.calls
        return calls

    @contextmanager
    def audited(self, nodeid: str) -> Iterator[ItemAudit]:
        """Run a block under the egress guard; record its receipt entry; fail it on a blocked attempt."""
        from pytest_dspy_local.audit import ItemAudit
        from pytest_dspy_local.engine import Counters

        guard, before, error = self.guard(), self.counters(), None
        calls_before = self._calls_by_endpoint()
        entry = ItemAudit(nodeid, {}, Counters(), [])
        try:
            with guard.active(nodeid):
                yield entry
        except BaseException as exc:  # re-raised below, after the record is made
            error = exc
        attempts = guard.take(nodeid)
        done = ItemAudit.from_attempts(nodeid, guard.take_contacted(nodeid), self.counters() - before, attempts)
        for endpoint, calls in self._calls_by_endpoint().items():
            if calls > calls_before.get(endpoint, 0):
                done.endpoints[endpoint] = done.endpoints.get(endpoint, 0) + calls - calls_before.get(endpoint, 0)
        done.model, done.data = entry.model, entry.data
        self.audit_items.append(done.as_dict())
        blocked = [a for a in attempts if a.blocked]
        if blocked:
            raise PromptError(blocked_message(blocked, guard.describe_allowed())) from None
        if error is not None:
            raise error

    def backend_name(self) -> str:
        """The resolved backend name (never ``auto``)."""
        from pytest_dspy_local.backends.builtin import resolve_backend_name

        return resolve_backend_name(self.settings)

    def engine(self) -> BackendEngine:
        """The backend wrapped for DSPy, created on first use; a failure is remembered."""
        if self._error is not None:
            raise PromptError(self._error)
        if self._engine is None:
            try:
                self._engine = self._make_engine()
            except (BackendError, ConfigError) as exc:
                self._error = str(exc)
                raise PromptError(self._error) from None
        return self._engine

    def _make_engine(self, settings: Settings | None = None) -> BackendEngine:
        from pytest_dspy_local.backends.builtin import resolve_backend_name
        from pytest_dspy_local.engine import BackendEngine

        settings = settings or self.settings
        name = resolve_backend_name(settings)
        backend = self.config.hook.pytest_dspy_local_make_backend(name=name, settings=settings)
        if backend is None:
            raise ConfigError(
                f"--dspy-backend: unknown backend {name!r}; choose auto, embedded, ollama, openai, "
                "or one that a conftest.py provides through pytest_dspy_local_make_backend"
            )
        from pytest_dspy_local.cache import ResponseCache

        s = settings
        cache = None if self.config.getoption("dspy_no_cache", False) else ResponseCache(self.cache_dir)
        return BackendEngine(backend, max_tokens=s.max_tokens, temperature=s.temperature, seed=s.seed, cache=cache)

    def model_info(self) -> ModelInfo:
        """The model's name, digest and endpoint (asks a server once)."""
        if self._info is None:
            try:
                self._info = self.engine().backend.info()
            except BackendError as exc:
                self._error = str(exc)
                raise PromptError(self._error) from None
        return self._info

    def lm(self) -> dspy.LM:
        """The ``dspy.LM`` for the configured model."""
        if self._lm is None:
            import_dspy(self.cache_dir)
            from pytest_dspy_local.engine import make_lm

            self._lm = make_lm(self.engine(), self.model_info())
        return self._lm

    def threshold(self, spec: PromptSpec) -> float:
        """Per-prompt table, then the module's ``threshold``, then the configured default."""
        table = self.settings.prompts.get(spec.name, {})
        if "threshold" in table:
            return float(table["threshold"])
        return spec.threshold if spec.threshold is not None else self.settings.threshold

    def settings_for(self, name: str) -> Settings:
        """The settings with the prompt's own table applied."""
        return for_prompt(self.settings, self.pinned, name)

    def prompt_lm(self) -> dspy.LM:
        """The proposal model for optimizers: ``prompt_model`` if set, else the task model."""
        other = self.settings.for_prompt_model()
        if other is None:
            return self.lm()
        if self._prompt_lm is None:
            from pytest_dspy_local.engine import make_lm

            try:
                self._prompt_engine = self._make_engine(other)
                self._prompt_lm = make_lm(self._prompt_engine, self._prompt_engine.backend.info())
            except (BackendError, ConfigError) as exc:
                raise PromptError(f"prompt model: {exc}") from None
        return self._prompt_lm

    def calls_text(self) -> str:
        """``N model calls, M cached`` so far, over both models."""
        total = self.counters()
        return f"{total.calls} model calls, {total.cached} cached"

    def lm_for(self, name: str) -> dspy.LM:
        """The task model with the prompt's own max_tokens, temperature and seed."""
        s = self.settings_for(name)
        return self.lm().copy(max_tokens=s.max_tokens, temperature=s.temperature, seed=s.seed)

    def run_eval(self, spec: PromptSpec, program: Any, rows: list[Row], repeats: int = 1) -> EvalResult:
        """Evaluate ``program`` on ``rows`` with the task model (pooled over ``repeats`` seeds), counting calls."""
        import dspy

        from pytest_dspy_local.evaluation import evaluate_rows, pool

        engine, runs = self.engine(), []
        calls_before, cached_before = engine.counter.calls, engine.counter.cached
        for repeat in range(repeats):
            lm = self.lm_for(spec.name)
            lm = lm.copy(seed=self.settings_for(spec.name).seed + repeat) if repeat else lm
            with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                runs.append(evaluate_rows(program, rows, spec.metric, spec.inputs, name=spec.name,
                                          origin=str(spec.path)))
        result = pool(runs)
        result.calls = engine.counter.calls - calls_before
        result.cached = engine.counter.cached - cached_before
        result.model = {k: str(v) for k, v in asdict(self.model_info()).items() if k != "details"}
        return result

    def evaluate(self, spec: PromptSpec, rows: list[Row]) -> EvalResult:
        """Evaluate one prompt module on its rows (the first ``max_examples``) and record the result."""
        settings = self.settings_for(spec.name)
        rows = rows[: settings.max_examples] if settings.max_examples else rows
        result = self.run_eval(spec, spec.program, rows, settings.repeats)
        result.threshold = self.threshold(spec)
        return result

    def queue_snapshot(
        self, spec: PromptSpec, dataset: Dataset, paths: SnapshotPaths, result: EvalResult, outcome: Outcome | None
    ) -> None:
        """Queue the snapshot files; they are written once, at session end."""
        from pytest_dspy_local.snapshot import snapshot_files

        prompt_info = self._prompt_engine.backend.info() if self._prompt_engine is not None else None
        files = snapshot_files(spec, dataset, paths, result, outcome, self.model_info(), prompt_info)
        self.pending.update(files)

    def flush_snapshots(self) -> None:
        """Write every queued snapshot file atomically (called once, at session end)."""
        from pytest_dspy_local.snapshot import write_atomically

        changed = {p: c for p, c in self.pending.items() if not p.is_file() or p.read_bytes() != c}
        write_atomically(changed)
        self.written = sorted(changed)
        self.pending.clear()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record each prompt item's outcome (on the controller, under xdist)."""
        if not getattr(report, "dspy_prompt", False):
            return
        from pytest_dspy_local.run_report import error_entry, prompt_entry

        result = getattr(report, "dspy_result", None)
        if result is not None:
            self.entries.append(prompt_entry(result, report.outcome))
        elif report.failed:
            self.entries.append(error_entry(report.nodeid, report.longreprtext.strip().splitlines()[-1:][0]
                                            if report.longreprtext.strip() else "error"))

    def report_document(self) -> dict[str, Any]:
        """The JSON/Markdown/HTML report document for this run."""
        from pytest_dspy_local.run_report import document

        s = self.settings
        return document(self.entries, {"alpha": s.alpha, "min_delta": s.min_delta, "repeats": s.repeats})

    def write_reports(self, json_path: str | None, html_path: str | None) -> None:
        """Write the JSON and HTML reports asked for, and the GitHub step summary when it is set."""
        from pytest_dspy_local import run_report as reports

        if not self.entries:
            return
        doc = self.report_document()
        if json_path:
            reports.write_json(Path(json_path), doc)
        if html_path:
            from pytest_dspy_local.html_report import render_html
            from pytest_dspy_local.snapshot import write_atomically

            write_atomically({Path(html_path): render_html(doc).encode()})
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            reports.append_step_summary(Path(summary), doc)

    def handover(self) -> dict[str, Any]:
        """What an xdist worker sends the controller: snapshots, receipt entries, unused snapshots."""
        return {
            "snapshots": {str(p): c.decode() for p, c in self.pending.items()},
            "audit": self.audit_items,
            "unused": [str(p) for p in self.unused_snapshots()],
        }

    def take_over(self, output: dict[str, Any]) -> None:
        """Controller side of ``handover``."""
        self.pending.update({Path(p): c.encode() for p, c in output.get("snapshots", {}).items()})
        self.audit_items += output.get("audit", [])
        self.snapshot_files.update(Path(p) for p in output.get("unused", []))

    def write_audit(self, path: Path) -> None:
        """Write the audit receipt."""
        from pytest_dspy_local.audit import receipt, write_receipt

        blocking = not self.config.getoption("dspy_allow_egress")
        write_receipt(path, receipt(self.audit_items, self.allowed_hosts(), blocking))

    def clear_cache(self) -> None:
        """Delete the project's answer cache."""
        from pytest_dspy_local.cache import DB_NAME

        for suffix in ("", "-wal", "-shm"):
            (self.cache_dir / f"{DB_NAME}{suffix}").unlink(missing_ok=True)

    def unused_snapshots(self) -> list[Path]:
        """Snapshot files whose prompt module no longer exists."""
        from pytest_dspy_local.snapshot import module_of

        return sorted(p for p in self.snapshot_files if (m := module_of(p)) is not None and not m.is_file())

    def call_totals(self) -> tuple[int, int]:
        """Model calls made and answered from the cache over every guarded item (optimizing included)."""
        calls = sum(int(i["model_calls"]) for i in self.audit_items)
        return calls, sum(int(i["cached_answers"]) for i in self.audit_items)

    def close(self) -> None:
        """Free the models."""
        for engine in (self._engine, self._prompt_engine):
            if engine is not None:
                engine.close()
        self._engine = self._prompt_engine = None

    def describe(self) -> dict[str, Any]:
        """Backend and model as settings say, without touching the model."""
        return {"backend": self.settings.backend, "model": self.settings.model, "base_url": self.settings.base_url}


STATE_KEY = pytest.StashKey[RunState]()
