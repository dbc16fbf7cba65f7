"""Run state: settings, the run's models and auditor, snapshots to write, results to report.

One ``RunState`` per pytest run, registered as a plugin and reached through
``STATE_KEY``; nothing about a run lives in module globals. Under xdist each worker
has one, and hands its snapshots and receipt entries to the controller's.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dspy_local.config import Settings, for_prompt
from pytest_dspy_local.models import Models

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pytest_dspy_local.audit import Auditor
    from pytest_dspy_local.data import Dataset, Row
    from pytest_dspy_local.evaluation import EvalResult
    from pytest_dspy_local.optimization import Outcome
    from pytest_dspy_local.snapshot import SnapshotPaths
    from pytest_dspy_local.spec import PromptSpec


class RunState:
    """What one pytest run knows and does beyond pytest's own bookkeeping."""

    def __init__(self, config: pytest.Config, settings: Settings, pinned: frozenset[str]) -> None:
        self.config = config
        self.settings = settings
        self.pinned = pinned
        self.models = Models(config, settings, self.cache_dir)
        self.optimize_mode: str | None = config.getoption("dspy_optimize", None)
        self.update_baseline: bool = bool(config.getoption("dspy_update_baseline", False))
        self.skipped: list[tuple[Path, str]] = []
        self.entries: list[dict[str, Any]] = []
        self.pending: dict[Path, bytes] = {}
        self.written: list[Path] = []
        self.snapshot_files: set[Path] = set()
        self._auditor: Auditor | None = None

    @property
    def cache_dir(self) -> Path:
        """The project-local answer cache (``cache_dir``, relative to the rootdir)."""
        return self.config.rootpath / self.settings.cache_dir

    @property
    def auditor(self) -> Auditor:
        """The egress guard and receipt, set up when the first prompt item runs."""
        if self._auditor is None:
            from pytest_dspy_local.audit import Auditor

            block = not self.config.getoption("dspy_allow_egress", False)
            self._auditor = Auditor(self.settings, self.models, block=block)
        return self._auditor

    def settings_for(self, name: str) -> Settings:
        """The settings with the prompt's own table applied."""
        return for_prompt(self.settings, self.pinned, name)

    def threshold(self, spec: PromptSpec) -> float:
        """Per-prompt table, then the module's ``threshold``, then the configured default."""
        table = self.settings.prompts.get(spec.name, {})
        if "threshold" in table:
            return float(table["threshold"])
        return spec.threshold if spec.threshold is not None else self.settings.threshold

    def run_eval(self, spec: PromptSpec, program: Any, rows: list[Row], repeats: int = 1) -> EvalResult:
        """Evaluate ``program`` on ``rows`` with the task model (pooled over ``repeats`` seeds), counting calls."""
        import dspy

        from pytest_dspy_local.evaluation import evaluate_rows, pool

        settings, runs = self.settings_for(spec.name), []
        before = self.models.counters()
        for repeat in range(repeats):
            lm = self.models.lm_with(settings)
            lm = lm.copy(seed=settings.seed + repeat) if repeat else lm
            with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                runs.append(evaluate_rows(program, rows, spec.metric, spec.inputs, name=spec.name,
                                          origin=str(spec.path)))
        result = pool(runs)
        traffic = self.models.counters() - before
        result.calls, result.cached = traffic.calls, traffic.cached
        result.model = {k: str(v) for k, v in asdict(self.models.info()).items() if k != "details"}
        return result

    def evaluate(self, spec: PromptSpec, rows: list[Row]) -> EvalResult:
        """Evaluate one prompt module on its rows (the first ``max_examples``)."""
        settings = self.settings_for(spec.name)
        rows = rows[: settings.max_examples] if settings.max_examples else rows
        result = self.run_eval(spec, spec.program, rows, settings.repeats)
        result.threshold = self.threshold(spec)
        return result

    def queue_snapshot(
        self,
        spec: PromptSpec,
        dataset: Dataset,
        paths: SnapshotPaths,
        result: EvalResult,
        outcome: Outcome | None,
        previous: Mapping[str, Any] | None,
    ) -> None:
        """Queue the snapshot files; they are written once, at session end."""
        from pytest_dspy_local.snapshot import snapshot_files

        info, prompt_info = self.models.info(), self.models.prompt_info()
        self.pending.update(snapshot_files(spec, dataset, paths, result, outcome, info, prompt_info, previous))

    def flush_snapshots(self) -> None:
        """Write every queued snapshot file that changed, atomically (once, at session end)."""
        from pytest_dspy_local.snapshot import write_atomically

        changed = {p: c for p, c in self.pending.items() if not p.is_file() or p.read_bytes() != c}
        write_atomically(changed)
        self.written = sorted(changed)
        self.pending.clear()

    def unused_snapshots(self) -> list[Path]:
        """Snapshot files whose prompt module no longer exists."""
        from pytest_dspy_local.snapshot import module_of

        return sorted(p for p in self.snapshot_files if (m := module_of(p)) is not None and not m.is_file())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record each prompt item's outcome (on the controller, under xdist)."""
        if not getattr(report, "dspy_prompt", False):
            return
        from pytest_dspy_local.run_report import error_entry, prompt_entry

        result = getattr(report, "dspy_result", None)
        if result is not None:
            self.entries.append(prompt_entry(result, report.outcome))
        elif report.failed:
            lines = report.longreprtext.strip().splitlines()
            self.entries.append(error_entry(report.nodeid, lines[-1] if lines else "error"))

    def write_reports(self, json_path: str | None, html_path: str | None) -> None:
        """Write the JSON and HTML reports asked for, and the GitHub step summary when it is set."""
        from pytest_dspy_local import run_report

        if not self.entries:
            return
        s = self.settings
        doc = run_report.document(self.entries, {"alpha": s.alpha, "min_delta": s.min_delta, "repeats": s.repeats})
        if json_path:
            run_report.write_json(Path(json_path), doc)
        if html_path:
            from pytest_dspy_local.html_report import render_html
            from pytest_dspy_local.snapshot import write_atomically

            write_atomically({Path(html_path): render_html(doc).encode()})
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            run_report.append_step_summary(Path(summary), doc)

    def write_audit(self, path: Path) -> None:
        """Write the audit receipt."""
        self.auditor.write(path)

    def call_totals(self) -> tuple[int, int, int]:
        """Model calls, cached answers, and items, over every guarded item (optimizing included)."""
        if self._auditor is None:
            return 0, 0, 0
        calls, cached = self._auditor.totals()
        return calls, cached, len(self._auditor.items)

    def handover(self) -> dict[str, Any]:
        """What an xdist worker sends the controller: snapshots, receipt entries, unused snapshots."""
        return {
            "snapshots": {str(p): c.decode() for p, c in self.pending.items()},
            "audit": self._auditor.items if self._auditor is not None else [],
            "unused": [str(p) for p in self.unused_snapshots()],
        }

    def take_over(self, output: dict[str, Any]) -> None:
        """Controller side of ``handover``."""
        self.pending.update({Path(p): c.encode() for p, c in output.get("snapshots", {}).items()})
        if output.get("audit"):
            self.auditor.items += output["audit"]
        self.snapshot_files.update(Path(p) for p in output.get("unused", []))

    def clear_cache(self) -> None:
        """Delete the project's answer cache."""
        from pytest_dspy_local.cache import DB_NAME

        for suffix in ("", "-wal", "-shm"):
            (self.cache_dir / f"{DB_NAME}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Free the models."""
        self.models.close()


STATE_KEY = pytest.StashKey[RunState]()
