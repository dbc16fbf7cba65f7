"""Collecting ``prompt_*.py`` modules: one item per module, evaluated in ``runtest``.

A prompt module is collected as a ``pytest.Module`` so that fixtures it defines
(``<name>_dataset``) and ordinary ``test_*`` functions in it work as usual;
the prompt itself becomes a ``PromptItem``, a ``pytest.Function`` whose only
fixture is ``request`` (the dataset fixture is looked up when it runs).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
import re
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dspy_local.core import data
from pytest_dspy_local.core.gating import Gate, against_baseline
from pytest_dspy_local.core.optimization import OptimizeJob, OptimizerModels, optimize_prompt
from pytest_dspy_local.core.provenance import program_sha256, staleness, version_changes
from pytest_dspy_local.core.results import (
    FAILED,
    PASSED,
    HistoryPoint,
    OptimizationOutcome,
    PromptResult,
    Transfer,
    short_digest,
)
from pytest_dspy_local.core.settings import TABLE, did_you_mean
from pytest_dspy_local.core.snapshot import (
    DamagedBaseline,
    SnapshotPaths,
    load_into,
    prompt_texts,
    read_baseline,
    recorded_provenance,
    snapshot_mismatch,
)
from pytest_dspy_local.core.spec import check_declared, forward_parameters, load_spec, prompt_name
from pytest_dspy_local.core.transfer import check, loss_message, provenance_entry, transfer_rows
from pytest_dspy_local.errors import PromptError, PromptFailure
from pytest_dspy_local.plugin.outcomes import failure_text
from pytest_dspy_local.plugin.progress import progress_for, terminal_writer
from pytest_dspy_local.plugin.startup import COLLECTED_KEY, run_state
from pytest_dspy_local.report.terminal import detail_lines, staleness_note, versions_note

if TYPE_CHECKING:
    import dspy
    from _pytest._code.code import TerminalRepr

    from pytest_dspy_local.core.provenance import Provenance
    from pytest_dspy_local.core.spec import PromptSpec
    from pytest_dspy_local.plugin.state import RunState
    from pytest_dspy_local.privacy.audit import ItemAudit

Baseline = Mapping[str, Any] | None


# The stand-in test function: it gives the item a fixture request and is never called. No
# docstring: `--collect-only -v` would print it under every prompt item.
def _prompt_runner(request: pytest.FixtureRequest) -> None:
    return None


class PromptModule(pytest.Module):
    """A prompt module: its own tests and fixtures, plus one PromptItem."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        """Import the module, check its declarations, yield its tests and the prompt item."""
        from pytest_dspy_local.models.run_models import import_dspy

        import_dspy(run_state(self.config).cache_dir)
        check_declared(self.obj, self.path)
        self.config.stash.setdefault(COLLECTED_KEY, set()).add(prompt_name(self.path))
        item = PromptItem.from_parent(self, name=prompt_name(self.path), callobj=_prompt_runner)
        return [*super().collect(), item]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        """One line for the plugin's own errors; pytest's report for import errors."""
        text = failure_text(excinfo.value)
        return text if text is not None else super().repr_failure(excinfo)


class PromptItem(pytest.Function):
    """Evaluates one prompt module's program on its data with the configured model."""

    is_prompt_item = True  # how plugin.py recognises these without importing this module
    dspy_result: dict[str, Any] | None = None  # PromptResult.to_json(), copied onto the call report (and across xdist)

    def _dataset(self, spec: PromptSpec) -> data.Dataset:
        files = data.data_files(self.path)
        fixture = f"{spec.name}_dataset"
        request: pytest.FixtureRequest = self.funcargs["request"]  # type: ignore[assignment]
        try:
            value: Any = request.getfixturevalue(fixture)
        except pytest.FixtureLookupError:
            value = None
        if files and value is not None:
            raise PromptError(f"{self.path}: data comes from both {files[0].name} and fixture {fixture!r}; keep one")
        if len(files) > 1:
            raise PromptError(f"{self.path}: several data files ({', '.join(f.name for f in files)}); keep one")
        if not files and value is None:
            raise PromptError(
                f"{self.path}: no evaluation data; add {self.path.with_suffix('.jsonl').name} "
                f"(or .csv/.yaml) beside it, or a fixture named {fixture!r}"
            )
        limit = run_state(self.config).settings_for(spec.name).max_examples  # a big file: keep only these rows
        dataset = data.Dataset.from_file(files[0], limit) if files else data.Dataset.from_fixture(fixture, value)
        data.check_inputs(dataset.rows, spec.inputs, str(self.path))
        return dataset

    def runtest(self) -> None:
        """Evaluate under the egress guard; fail below the threshold or on a regression."""
        state = run_state(self.config)
        with state.auditor.audited(self.nodeid) as entry:
            result = self._evaluate(state, entry)
        self._publish(result)
        if result.reasons:
            raise PromptFailure(result)

    def _evaluate(self, state: RunState, entry: ItemAudit) -> PromptResult:
        spec = load_spec(self.module, self.path)
        check_declarations(spec, self.module)
        # The program as the module makes it, before a snapshot loads into it.
        written, as_written = program_sha256(spec.program), copy.deepcopy(spec.program)
        dataset = self._dataset(spec)
        paths = SnapshotPaths.for_module(self.path)
        baseline, replaced = self._baseline(state, paths)
        current = state.provenance(spec, dataset, written)
        stale, notes = self._staleness(state, recorded_provenance(paths, baseline), current,
                                       snapshot_mismatch(paths, baseline))
        notes += replaced + metadata_notes(dataset.rows, spec)
        outcome = self._optimize_or_load(state, spec, dataset, paths, baseline, stale)
        total = len(state.prompt_rows(spec, dataset.rows)) * state.settings_for(spec.name).repeats
        evaluation = state.evaluate(spec, dataset.rows, progress_for(self.config, self.name, total))
        model = state.models.identity()
        entry.model, entry.data = model.to_json(), {"origin": dataset.origin, "sha256": dataset.sha256}
        notes += check_model(state, paths, baseline, model.digest)
        threshold = state.run.threshold(spec.name, spec.threshold)
        reasons = verdict(evaluation.score, threshold)
        # A stale snapshot that was re-optimized is re-recorded even when its program is kept:
        # that program has now been chosen against the current module, data and models.
        rewriting = (outcome is not None and (outcome.replace or bool(stale))) or state.flags.update_baseline
        before = state.models.counters()
        transfers = self._transfer(state, spec, as_written, written, dataset.rows, baseline, outcome is not None)
        extra = state.models.counters() - before
        gate = Gate(evaluation.examples)
        if rewriting:
            if transfers:
                current = dataclasses.replace(current, transfer=provenance_entry(transfers))
            state.queue_snapshot(spec, dataset, evaluation, outcome, paths, baseline, current)
        elif baseline is None and state.settings.strict_snapshots:
            reasons.append(f"no baseline, and strict snapshots are on: record one with `pytest {self.path.name} "
                           f"--dspy-update-baseline` (or --optimize) and commit {paths.baseline}")
        else:
            s = state.settings_for(spec.name)
            gate = against_baseline(evaluation.examples, baseline, alpha=s.alpha, min_delta=s.min_delta, seed=s.seed)
        notes += [*gate.notes, *([outcome.summary] if outcome is not None else [])]
        return PromptResult(
            nodeid=self.nodeid, name=spec.name, outcome=FAILED if reasons or gate.reasons else PASSED,
            # Under --optimize the item's time is the optimization's as well as the evaluation's.
            examples=gate.examples, threshold=threshold,
            seconds=evaluation.seconds + (outcome.seconds if outcome is not None else 0.0),
            calls=evaluation.traffic.calls + extra.calls, cached=evaluation.traffic.cached + extra.cached,
            repeats=evaluation.repeats, model=model, notes=tuple(notes),
            reasons=(*reasons, *gate.reasons), comparison=gate.comparison,
            history=tuple(HistoryPoint.from_json(h) for h in (baseline or {}).get("history", [])),
            prompt=prompt_texts(spec, dataset, paths), optimization=outcome, stale=tuple(stale),
            transfer=transfers,
        )

    @staticmethod
    def _baseline(state: RunState, paths: SnapshotPaths) -> tuple[Baseline, list[str]]:
        """The stored baseline; one of the wrong shape is replaced when this run re-records it (with a note)."""
        try:
            return read_baseline(paths), []
        except DamagedBaseline as exc:
            if not (state.flags.update_baseline or state.flags.optimize is not None):
                raise
            return None, [f"{str(exc).split('; restore')[0]}: replaced by this run's results"]

    @staticmethod
    def _transfer(
        state: RunState, spec: PromptSpec, as_written: dspy.Module, written: str, rows: Sequence[data.Row],
        baseline: Baseline, optimized_now: bool,
    ) -> tuple[Transfer, ...]:
        """``--dspy-target``: the program as written and as now loaded or optimized, on every target."""
        targets = state.target_models(spec)
        if not targets:
            return ()
        s = state.settings_for(spec.name)
        checked, heldout = transfer_rows(state.prompt_rows(spec, rows), baseline, s, optimized_now)
        same = program_sha256(spec.program) == written
        return tuple(
            check(t, as_written, spec.program, checked, heldout=heldout, task=state.task_scorer(spec),
                  same_program=same, alpha=s.alpha, seed=s.seed)
            for t in targets
        )

    @staticmethod
    def _staleness(
        state: RunState, recorded: Provenance | None, current: Provenance, mismatch: str | None
    ) -> tuple[list[str], list[str]]:
        """Why the snapshot is stale (empty: fresh), and the notes that say so."""
        stale = staleness(recorded, current) + ([mismatch] if mismatch else [])
        notes = [staleness_note(stale, state.flags.optimize), versions_note(version_changes(recorded, current))]
        return stale, [n for n in notes if n is not None]

    def _optimize_or_load(
        self, state: RunState, spec: PromptSpec, dataset: data.Dataset, paths: SnapshotPaths, baseline: Baseline,
        stale: list[str],
    ) -> OptimizationOutcome | None:
        if state.flags.optimize is None or (state.flags.optimize == "stale" and not stale):
            load_into(spec.program, paths, baseline)
            return None
        settings = state.settings_for(spec.name)
        job = OptimizeJob(spec, dataset, paths, baseline, settings, force=state.flags.optimize == "force")
        targets = state.target_models(spec)

        def losses(current: dspy.Module, candidate: dspy.Module, rows: Sequence[data.Row]) -> list[str]:
            checks = [check(t, current, candidate, rows, heldout=True, task=state.task_scorer(spec),
                            same_program=False, alpha=settings.alpha, seed=settings.seed) for t in targets]
            return [loss_message(spec.name, c) for c in checks if c.lost]

        def requests() -> int:
            traffic = state.models.counters()
            return traffic.calls + traffic.cached

        models = OptimizerModels(state.models.lm_with(settings), state.models.prompt_lm(), state.task_scorer(spec),
                                 requests, state.models.concurrency(settings),
                                 losses if targets else None)
        heard: list[str] = []
        try:
            with quiet_optimizer(heard):
                return optimize_prompt(job, models, self._progress)
        except (ValueError, TypeError) as exc:
            if not refused_by_optimizer(exc):
                raise
            name = settings.optimizer
            why = " ".join(str(exc).split())
            raise PromptError(f"{spec.path}: the {name} optimizer stopped: {why}; adjust its settings in "
                              f"[{TABLE}.optimizers.{name}]") from None
        finally:
            if heard:
                self.add_report_section("call", "dspy-local optimizer warnings", "\n".join(warning_lines(heard)))

    def _publish(self, result: PromptResult) -> None:
        """Hand the result to hooks, JUnit properties, the report sections and the run's reports."""
        if result.optimization is not None:
            self.add_report_section("call", "dspy-local optimize", result.optimization.summary)
        c = result.comparison
        self.user_properties += [
            ("dspy_score", round(result.score, 6)),
            ("dspy_threshold", result.threshold),
            ("dspy_n", result.n),
            ("dspy_parse_failures", result.parse_failures),
            ("dspy_model_digest", "" if result.model is None else result.model.digest),
            ("dspy_baseline", None if c is None else c.baseline_score),
            ("dspy_delta", None if c is None else c.delta),
            ("dspy_p_value", None if c is None else c.p_value),
        ]
        self.ihook.pytest_dspy_local_prompt_result(item=self, result=result)
        self.add_report_section("call", "dspy-local", "\n".join(detail_lines(result)))
        self.dspy_result = result.to_json()

    def _progress(self, line: str) -> None:
        write = terminal_writer(self.config)
        if write is None:
            return
        # Writing past capture resumes it by resetting sys.stdout and sys.stderr: keep quiet_optimizer's redirect.
        streams = sys.stdout, sys.stderr
        try:
            write(f"dspy-local optimize {self.name}: {line}")
        finally:
            sys.stdout, sys.stderr = streams

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str | TerminalRepr:  # type: ignore[override]
        """A readable report for a low score or a bad prompt module; pytest's otherwise."""
        text = failure_text(excinfo.value)
        return text if text is not None else super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Name the prompt in reports."""
        return self.path, None, f"prompt {self.name}"


def check_model(state: RunState, paths: SnapshotPaths, baseline: Baseline, current: str) -> list[str]:
    """Warn (or fail, with strict_model) when the baseline was recorded with another model."""
    recorded = (baseline or {}).get("model", {}).get("digest")
    if not recorded or recorded == current:
        return []
    message = (f"{paths.baseline.name} was recorded with model digest {short_digest(recorded)}, this run uses "
               f"{short_digest(current)}; re-record it with --dspy-update-baseline or --optimize")
    if state.settings.strict_model:
        raise PromptError(message + " (strict_model is on)")
    warnings.warn(pytest.PytestWarning(message), stacklevel=1)
    return [message]


def verdict(score: float, threshold: float | None) -> list[str]:
    """Why a score fails its threshold (empty when it passes)."""
    if threshold is None or score >= threshold:
        return []
    return [f"score {score:.3f} is below threshold {threshold:.3f}"]


def program_inputs(program: dspy.Module) -> list[str]:
    """Every name the program can take: its predictors' input fields and ``forward``'s named parameters."""
    names = [n for _, p in program.named_predictors() for n in p.signature.input_fields]
    names += forward_parameters(program, required=False)
    return list(dict.fromkeys(names))


def check_declarations(spec: PromptSpec, module: ModuleType) -> None:
    """A module's ``threshold`` outside [0, 1], or an ``inputs`` name the program lacks, weakens the gate silently."""
    if spec.threshold is not None and not 0.0 <= spec.threshold <= 1.0:
        raise PromptError(f"{spec.path}: `threshold = {module.threshold!r}` must be between 0 and 1 (the mean "
                          "metric's pass mark), e.g. threshold = 0.5")
    if getattr(module, "inputs", None) is None:
        return
    known = program_inputs(spec.program)
    for name in spec.inputs:
        if name not in known:
            raise PromptError(f"{spec.path}: `inputs` names {name!r}, which the program does not take;"
                              f"{did_you_mean(name, known)} its input fields: {', '.join(known) or 'none'}")


SKIP_DIRS = ("__pycache__", "site-packages", "__prompt_snapshots__")


def prompt_names_on_disk(root: Path, patterns: Sequence[str], norecurse: Sequence[str]) -> set[str]:
    """Names of the prompt files under ``root`` (pytest's ``norecursedirs`` pruned), collected or not."""
    names: set[str] = set()
    for _folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not any(fnmatch(d, p) for p in norecurse)]
        names |= {prompt_name(Path(f)) for f in files if f.endswith(".py") and any(fnmatch(f, p) for p in patterns)}
    return names


def check_prompt_tables(config: pytest.Config) -> None:
    """After collection: each ``[tool.dspy_local.prompts.<name>]`` must name a prompt module (a typo gates nothing)."""
    from pytest_dspy_local.errors import UsageError
    from pytest_dspy_local.plugin.options import pyproject

    collected = config.stash.get(COLLECTED_KEY, set())
    state = run_state(config)
    missing = sorted(set(state.settings.prompts) - collected)
    if not collected or not missing:  # no prompt module in this run: nothing to compare with
        return
    on_disk = prompt_names_on_disk(config.rootpath, state.settings.prompt_files, config.getini("norecursedirs"))
    for name in missing:
        if name not in on_disk:
            hint = did_you_mean(name, sorted(collected | on_disk))
            raise UsageError(f"{pyproject(config)}: [{TABLE}.prompts.{name}] names no prompt module;{hint} "
                             "a table's name is its module's file name without `prompt_` and `.py`")


def metadata_notes(rows: Sequence[data.Row], spec: PromptSpec) -> list[str]:
    """Say once which data keys are neither inputs nor outputs: row metadata the metric sees, never a label or demo."""
    fields = {*spec.inputs, *spec.outputs}
    extra = sorted({k for row in rows for k in row.values if k not in fields})
    if not extra or not spec.outputs:
        return []
    names = ", ".join(repr(k) for k in extra)
    return [f"data key(s) {names}: no input or output field of the program, so kept as row metadata (the metric "
            "sees them; not expected outputs, not in demos)"]


class _Heard(logging.Handler):
    """Collects DSPy's warnings while an optimizer runs, instead of pytest's captured log."""

    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message's first line."""
        self.records.append(record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else "")


# What DSPy's optimizers print for a terminal: tqdm bars ("Average Metric: 1.00 / 2 (50.0%):  50%|#####  | 1/2
# [00:18<00:18, 18.50s/it]") and bootstrapping chatter. In a failure report it is hundreds of captured lines.
_CHATTER = re.compile(r"\|\s*\d+/\d+\s*\[|\d+/\d+ \[\d|it/s\]|s/it\]|^\s*Bootstrapp(ing set|ed \d+ full traces)")


def _passed_on(text: str, stream: Any) -> None:
    """What a block printed, less DSPy's chatter, written to ``stream`` after all."""
    kept = [line for line in re.split(r"[\r\n]", text) if line.strip() and not _CHATTER.search(line)]
    if kept:
        stream.write("\n".join(kept) + "\n")


@contextlib.contextmanager
def quiet_optimizer(records: list[str]) -> Iterator[None]:
    """While an optimizer runs: DSPy's log warnings and Python warnings go into ``records``, its progress bars
    and bootstrapping chatter are dropped, anything else it prints passes through."""
    logger = logging.getLogger("dspy")
    saved = logger.handlers[:], logger.propagate
    logger.handlers = [_Heard(records)]
    logger.propagate = False
    out, err, stdout, stderr = io.StringIO(), io.StringIO(), sys.stdout, sys.stderr
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            yield
    finally:
        records += [f"{w.category.__name__}: {w.message}" for w in caught]
        logger.handlers, logger.propagate = saved
        _passed_on(out.getvalue(), stdout)
        _passed_on(err.getvalue(), stderr)


def warning_lines(records: Sequence[str], limit: int = 10) -> list[str]:
    """Each distinct warning once, with how often it came, the most frequent first."""
    counts = Counter(r for r in records if r)
    cut = [(text if len(text) <= 160 else text[:157] + "...", n) for text, n in counts.most_common(limit)]
    lines = [f"{n}x {text}" if n > 1 else text for text, n in cut]
    rest = len(counts) - limit
    return lines + ([f"... and {rest} other warning(s)"] if rest > 0 else [])


def refused_by_optimizer(exc: BaseException) -> bool:
    """Whether a ValueError or TypeError came from DSPy's optimizer code checking its settings (not user code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "dspy/teleprompt/" in frames[-1].filename.replace("\\", "/")
