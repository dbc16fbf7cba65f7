"""Run state: the run's settings, models and auditor, snapshots to write, results to report.

One ``RunState`` per pytest run, reached through ``startup.run_state(config)``, which makes
it when first needed; nothing about a run lives in module globals. It is registered as a
plugin (for its report hook) only when prompt items can report: once a prompt module is
collected, or on xdist's controller (plugin/hooks.py). Under xdist each worker has one and
hands its share to the controller's (plugin/xdist.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Only what configure needs is imported here: a run without prompt modules never imports
# core.results, the models layer or the reporters (bench/bench_overhead.py measures it).
if TYPE_CHECKING:
    import dspy

    from pytest_dspy_local.core.data import Dataset, Row
    from pytest_dspy_local.core.evaluation import OnExample
    from pytest_dspy_local.core.provenance import Provenance
    from pytest_dspy_local.core.results import Evaluation, ModelIdentity, OptimizationOutcome, PromptResult, RunReport
    from pytest_dspy_local.core.settings import RunSettings, Settings
    from pytest_dspy_local.core.snapshot import SnapshotPaths
    from pytest_dspy_local.core.spec import PromptSpec
    from pytest_dspy_local.core.transfer import Scorer, TargetModel
    from pytest_dspy_local.models.run_models import Models
    from pytest_dspy_local.privacy.audit import Auditor


class RunState:
    """What one pytest run knows and does beyond pytest's own bookkeeping."""

    def __init__(self, config: pytest.Config, run: RunSettings) -> None:
        self.run = run
        self.settings = run.settings
        self.flags = run.flags
        self.cache_dir = config.rootpath / run.settings.cache_dir
        self._make_backend = config.hook.pytest_dspy_local_make_backend
        self.results: list[PromptResult] = []
        self.pending: dict[Path, bytes] = {}
        self.written: list[Path] = []
        self.deleted: list[Path] = []  # unused snapshot files removed by --dspy-update-baseline / --optimize
        self.snapshot_files: set[Path] = set()
        self._auditor: Auditor | None = None

    @cached_property
    def models(self) -> Models:
        """The run's models, set up when first asked for (never, in a run without prompts)."""
        from pytest_dspy_local.models.run_models import Models

        hook = self._make_backend
        return Models(self.settings, None if self.flags.no_cache else self.cache_dir,
                      lambda name, settings: hook(name=name, settings=settings))

    @property
    def auditor(self) -> Auditor:
        """The egress guard and receipt, set up when the first prompt item runs."""
        if self._auditor is None:
            from pytest_dspy_local.privacy.audit import Auditor

            self._auditor = Auditor(self.settings, self.models, block=not self.flags.allow_egress)
        return self._auditor

    def settings_for(self, name: str) -> Settings:
        """The settings with the prompt's own table applied."""
        return self.run.for_prompt(name)

    def run_eval(
        self, spec: PromptSpec, program: dspy.Module, rows: Sequence[Row], repeats: int = 1,
        on_example: OnExample | None = None, target: str | None = None,
    ) -> Evaluation:
        """Evaluate ``program`` on ``rows`` with the task model, or target model ``target``.

        Pooled over ``repeats`` seeds; the traffic it caused is counted.
        """
        import dspy

        from pytest_dspy_local.core.evaluation import evaluate_rows, pool
        from pytest_dspy_local.core.results import Evaluation

        settings, runs = self.settings_for(spec.name), []
        concurrency = self.models.concurrency(settings, target)
        before = self.models.counters()
        for repeat in range(repeats):
            lm = self.models.lm_with(settings, target)
            lm = lm.copy(seed=settings.seed + repeat) if repeat else lm
            with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                runs.append(evaluate_rows(program, rows, spec.metric, spec.inputs, origin=str(spec.path),
                                          concurrency=concurrency, on_example=on_example))
        pooled = pool(runs)
        return Evaluation(pooled.examples, pooled.seconds, pooled.repeats, self.models.counters() - before)

    def prompt_rows(self, spec: PromptSpec, rows: Sequence[Row]) -> Sequence[Row]:
        """The rows a prompt is evaluated on (the first ``max_examples``)."""
        settings = self.settings_for(spec.name)
        return rows[: settings.max_examples] if settings.max_examples else rows

    def evaluate(self, spec: PromptSpec, rows: Sequence[Row], on_example: OnExample | None = None) -> Evaluation:
        """Evaluate one prompt module on its rows (the first ``max_examples``), every repeat."""
        return self.run_eval(spec, spec.program, self.prompt_rows(spec, rows), self.settings_for(spec.name).repeats,
                             on_example)

    def task_scorer(self, spec: PromptSpec) -> Scorer:
        """Evaluate a program of this prompt on some rows with the task model (one repeat)."""
        return lambda program, rows: self.run_eval(spec, program, rows)

    def target_models(self, spec: PromptSpec) -> list[TargetModel]:
        """The run's target models (``--dspy-target``), each with a scorer for this prompt."""
        from pytest_dspy_local.core.transfer import TargetModel

        def scorer(name: str) -> Scorer:
            return lambda program, rows: self.run_eval(spec, program, rows, target=name)

        def identity(name: str) -> Callable[[], ModelIdentity]:
            return lambda: self.models.target_identity(name)

        return [TargetModel(name, identity(name), scorer(name)) for name in self.run.targets()]

    def provenance(self, spec: PromptSpec, dataset: Dataset, program_sha256: str) -> Provenance:
        """What a snapshot of this prompt would be optimized from now.

        ``program_sha256`` is taken before a snapshot is loaded. The proposal model is asked
        for its digest only when optimizing; a plain run leaves it unidentified.
        """
        from pytest_dspy_local.core.provenance import (
            NOT_IDENTIFIED,
            RUN_SETTINGS,
            Provenance,
            row_ids,
            source_sha256,
            versions,
        )

        s = self.settings_for(spec.name)
        proposer = None
        if s.prompt_model is not None:
            if self.flags.optimize is not None:
                self.models.prompt_lm()
            identity = self.models.prompt_identity()
            proposer = NOT_IDENTIFIED if identity is None else identity.digest
        return Provenance(
            dataset.sha256, self.models.identity().digest, proposer, s.optimizer,
            dict(s.optimizers.get(s.optimizer, {})), s.seed, source_sha256(spec.path), program_sha256,
            row_ids(dataset.rows, spec.inputs), {k: getattr(s, k) for k in RUN_SETTINGS}, versions(),
        )

    def queue_snapshot(
        self,
        spec: PromptSpec,
        dataset: Dataset,
        evaluation: Evaluation,
        outcome: OptimizationOutcome | None,
        paths: SnapshotPaths,
        previous: Mapping[str, Any] | None,
        provenance: Provenance | None = None,
    ) -> None:
        """Queue the snapshot files; they are written once, at session end.

        ``provenance`` is recorded only with an optimization's outcome: --dspy-update-baseline
        re-records results of a program it did not make, so the previous provenance stays.
        """
        from pytest_dspy_local.core.snapshot import Recording, snapshot_files

        recording = Recording(spec, dataset, evaluation, outcome, self.models.identity(),
                              self.models.prompt_identity(), provenance if outcome is not None else None)
        self.pending.update(snapshot_files(recording, paths, previous))

    def flush_snapshots(self) -> None:
        """Write every queued snapshot file that changed, atomically (once, at session end)."""
        changed = {p: c for p, c in self.pending.items() if not p.is_file() or p.read_bytes() != c}
        if changed:
            from pytest_dspy_local.core.files import write_atomically

            write_atomically(changed)
        self.written = sorted(changed)
        self.pending.clear()

    def unused_snapshots(self) -> list[Path]:
        """Snapshot files whose prompt module no longer exists."""
        if not self.snapshot_files:
            return []
        from pytest_dspy_local.core.snapshot import module_of

        return sorted(p for p in self.snapshot_files if (m := module_of(p)) is not None and not m.is_file())

    def delete_unused_snapshots(self) -> None:
        """Remove snapshot files whose prompt module is gone (a run that re-records snapshots owns them)."""
        for path in self.unused_snapshots():
            path.unlink(missing_ok=True)
            self.deleted.append(path)
        self.snapshot_files.difference_update(self.deleted)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record each prompt item's result (on the controller, under xdist)."""
        if not getattr(report, "dspy_prompt", False):
            return
        from pytest_dspy_local.core.results import PromptResult

        carried = getattr(report, "dspy_result", None)
        if carried is not None:
            self.results.append(PromptResult.from_json(carried))
        elif report.failed:
            self.results.append(PromptResult.error(report.nodeid, error_reason(report)))

    def report(self) -> RunReport:
        """Every prompt item's result, as one report."""
        from pytest_dspy_local.core.results import GateSettings, RunReport

        s = self.settings
        return RunReport.of(self.results, GateSettings(s.alpha, s.min_delta, s.repeats))

    def write_reports(self) -> None:
        """Write the audit receipt, the JSON and HTML reports asked for, and the GitHub step summary."""
        if self.flags.audit:
            self.auditor.write(self.flags.audit)
        if not self.results:
            return
        from pytest_dspy_local.core.files import write_atomically
        from pytest_dspy_local.report.json_report import write_json
        from pytest_dspy_local.report.markdown import append_step_summary

        report = self.report()
        if self.flags.json_report:
            write_json(self.flags.json_report, report)
        if self.flags.html_report:
            from pytest_dspy_local.report.html import render_html

            write_atomically({self.flags.html_report: render_html(report).encode()})
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            append_step_summary(Path(summary), report)

    def audit_items(self) -> list[dict[str, Any]]:
        """The receipt entries so far (none before the first guarded item)."""
        return [] if self._auditor is None else self._auditor.items

    def call_totals(self) -> tuple[int, int, int]:
        """Model calls, cached answers, and items, over every guarded item (optimizing included)."""
        if self._auditor is None:
            return 0, 0, 0
        calls, cached = self._auditor.totals()
        return calls, cached, len(self._auditor.items)

    def clear_cache(self) -> None:
        """Empty the project's answer cache (a damaged one is replaced); ``UsageError`` when it cannot be."""
        from pytest_dspy_local.models.cache import clear_cache

        clear_cache(self.cache_dir)

    def check_cache(self) -> None:
        """Open the answer cache now, so one that cannot be used stops the run before any item (``UsageError``)."""
        if not self.flags.no_cache:
            self.models.check_cache()

    def close(self) -> None:
        """Free the models (if they were ever set up)."""
        if "models" in self.__dict__:
            self.models.close()


def error_reason(report: pytest.TestReport) -> str:
    """One line for an item that could not be evaluated: the plugin's message, or where and what was raised."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return f"{crash.path}:{crash.lineno}: {crash.message}"
    lines = report.longreprtext.strip().splitlines()
    return lines[-1] if lines else "error"

