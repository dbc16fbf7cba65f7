"""pytest hooks of pytest-dspy-local (entry point ``dspy_local``); each delegates.

This module and what it imports at the top never import DSPy, LiteLLM or llama.cpp,
nor the plugin's settings: a repo without prompt modules that configures nothing pays
for little more than reading this file (plugin/startup.py).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from pytest_dspy_local.core.defaults import PROMPT_FILES, SNAPSHOT_DIR
from pytest_dspy_local.plugin import options
from pytest_dspy_local.plugin.startup import COLLECTED_KEY, SKIPPED_KEY, STATE_KEY, header, run_state

# Everything else is imported where it is used: a run without prompt modules imports
# little beyond this module (bench/bench_overhead.py measures it).

NOT_A_PROMPT = "defines neither `program` nor `metric`"
PROMPT_REPORTS = "dspy_local_prompt_reports"
MODEL_LINE_SHOWN = pytest.StashKey[bool]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Declare the plugin's own hooks."""
    from pytest_dspy_local.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the --dspy-* options."""
    options.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Resolve and check every setting now if anything is configured (a bad one stops the run).

    Otherwise every setting is its default, and the run state is made when a prompt module
    or snapshot file is collected (plugin/startup.py).
    """
    config.stash[SKIPPED_KEY] = []
    if options.configured(config):
        run_state(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Free the model."""
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect prompt modules."""
    config = parent.config
    if file_path.parent.name == SNAPSHOT_DIR:
        run_state(config).snapshot_files.add(file_path)
    state = config.stash.get(STATE_KEY, None)
    if not is_prompt_file(file_path, PROMPT_FILES if state is None else state.settings.prompt_files):
        return None
    from pytest_dspy_local.core.declared import declared_names

    if not declared_names(file_path):  # a look-alike (prompt_templates.py): skip it without importing collection
        config.stash[SKIPPED_KEY].append((file_path, NOT_A_PROMPT))
        return None
    from pytest_dspy_local.plugin.collection import PromptModule

    watch_prompt_reports(parent.config)
    return PromptModule.from_parent(parent, path=file_path)


def is_prompt_file(path: Path, patterns: Sequence[str]) -> bool:
    """Does the file's name match the prompt-file patterns (``prompt_files``)?"""
    return path.suffix == ".py" and any(fnmatch(path.name, p) for p in patterns)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: Any) -> None:
    """xdist controller: prompt items' reports come from the workers, so watch reports from the start."""
    watch_prompt_reports(config)


def watch_prompt_reports(config: pytest.Config) -> None:
    """Register the per-test hooks once prompt items may report; until then ordinary tests pay nothing for them."""
    if not config.pluginmanager.has_plugin(PROMPT_REPORTS):
        config.pluginmanager.register(run_state(config), "dspy_local_state")
        config.pluginmanager.register(PromptReports(), PROMPT_REPORTS)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write snapshots, the receipt and the reports once (an xdist worker hands its share to the controller)."""
    state = session.config.stash.get(STATE_KEY, None)
    if state is None:  # nothing configured, no prompt module, no snapshot file: nothing to write
        return
    from pytest_dspy_local.plugin.outcomes import stopping_on_write_errors

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from pytest_dspy_local.plugin import xdist

        workeroutput[xdist.KEY] = xdist.handover(state)
        return
    with stopping_on_write_errors():
        state.flush_snapshots()
        if state.flags.update_baseline or state.flags.optimize is not None:
            state.delete_unused_snapshots()
        state.write_reports()
    if state.settings.strict_snapshots and state.unused_snapshots() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: take over a worker's snapshots and receipt entries."""
    from pytest_dspy_local.plugin import xdist

    xdist.take_over(run_state(node.config), getattr(node, "workeroutput", {}).get(xdist.KEY, {}))


def pytest_report_header(config: pytest.Config) -> str:
    """Name the configured backend and model."""
    state = config.stash.get(STATE_KEY, None)
    return header(None if state is None else state.settings)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """After collection, one line and exit code 4 for a per-prompt table naming no prompt, or an unusable cache.

    xdist workers skip both (a worker cannot stop the run cleanly): the controller checks the tables, and
    the workers' items error with the cache's line.
    """
    config = session.config
    tables = bool(config.stash.get(COLLECTED_KEY, None))
    prompts = not config.option.collectonly and any(getattr(i, "is_prompt_item", False) for i in session.items)
    if hasattr(config, "workerinput") or not (tables or prompts):
        return  # an idle run imports nothing more
    from pytest_dspy_local.plugin.outcomes import stopping_on_usage_errors

    with stopping_on_usage_errors():
        if tables:
            from pytest_dspy_local.plugin.collection import check_prompt_tables

            check_prompt_tables(config)
        if prompts:
            run_state(config).check_cache()


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """After collection: the model's digest when prompts will run; skipped look-alike files."""
    lines = []
    if config.option.verbose > 0 or config.option.collectonly:
        lines += [f"dspy-local: not a prompt module: {p} ({why})" for p, why in config.stash[SKIPPED_KEY]]
    if any(getattr(i, "is_prompt_item", False) for i in items) and not config.option.collectonly:
        lines.append(model_line(config))
    return lines


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """xdist controller: name the model once, when a worker has collected a prompt item (the controller
    collects nothing itself, so ``pytest_report_collectionfinish`` sees no items there)."""
    config = node.config
    if config.stash.get(MODEL_LINE_SHOWN, False) or config.option.collectonly:
        return
    from pytest_dspy_local.core.spec import prompt_name

    patterns = run_state(config).settings.prompt_files

    def is_prompt_item(nodeid: str) -> bool:
        path, _, name = nodeid.partition("::")
        return is_prompt_file(Path(path), patterns) and name == prompt_name(Path(path))

    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None and any(is_prompt_item(i) for i in ids):
        config.stash[MODEL_LINE_SHOWN] = True
        terminal.write_line(model_line(config))


def model_line(config: pytest.Config) -> str:
    """The header line naming the task model by digest (or why it cannot be named)."""
    from pytest_dspy_local.errors import PromptError
    from pytest_dspy_local.report.terminal import model_line as line

    try:
        return line(run_state(config).models.identity())
    except PromptError as exc:
        return line(str(exc))


class PromptReports:
    """Per-test hooks for prompt items' reports, registered by ``watch_prompt_reports`` (with the run state's)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Carry a prompt item's result on its report (xdist sends reports to the controller)."""
        report = yield
        if getattr(item, "is_prompt_item", False):
            # Plain attributes: pytest serializes a report's __dict__ for xdist and restores it.
            setattr(report, "dspy_prompt", True)  # noqa: B010
            result = getattr(item, "dspy_result", None)
            if call.when == "call" and result is not None:
                setattr(report, "dspy_result", result)  # noqa: B010
        return report

    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
        """Show each prompt's score with -v."""
        props = dict(getattr(report, "user_properties", ()))
        if report.when != "call" or "dspy_score" not in props:
            return None
        from pytest_dspy_local.report.terminal import status_word

        outcome = "passed" if report.passed else "failed"
        return outcome, "." if report.passed else "F", status_word(report.passed, props)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """One line per evaluated prompt and the model-call count."""
    state = config.stash.get(STATE_KEY, None)
    if state is None or hasattr(config, "workerinput"):
        return
    if not (state.results or state.written or state.unused_snapshots() or state.deleted):
        return
    from pytest_dspy_local.report.terminal import snapshot_lines, summary_lines

    terminalreporter.section("dspy-local")
    for line in summary_lines(state.results, *state.call_totals()):
        terminalreporter.write_line(line)
    for line in snapshot_lines(state.written, state.unused_snapshots(), state.deleted, state.settings.strict_snapshots):
        terminalreporter.write_line(line)


@pytest.fixture
def dspy_lm(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The configured local model as a ``dspy.LM``, active (with JSONAdapter) and egress-guarded for the test."""
    from pytest_dspy_local.errors import PromptError
    from pytest_dspy_local.plugin.outcomes import fail_test

    state = run_state(request.config)
    try:
        lm = state.models.lm()
    except PromptError as exc:
        fail_test(exc)
    import dspy

    try:
        with state.auditor.audited(request.node.nodeid), dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            yield lm
    except PromptError as exc:  # a connection the egress guard blocked during the test
        fail_test(exc)
