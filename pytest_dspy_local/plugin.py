"""pytest hooks of pytest-dspy-local (entry point ``dspy_local``); each delegates.

This module and what it imports at the top never import DSPy, LiteLLM or
llama.cpp: a repo without prompt modules pays nothing for the plugin.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from pytest_dspy_local import hookspecs, options
from pytest_dspy_local.config import SNAPSHOT_DIR, ConfigError, environ, resolve
from pytest_dspy_local.exceptions import PromptError
from pytest_dspy_local.session import STATE_KEY, RunState

# Everything else is imported where it is used: a run without prompt modules imports
# little beyond this module (bench/bench_overhead.py measures it).


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Declare the plugin's own hooks."""
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the --dspy-* options."""
    options.addoption(parser)


def _pyproject(config: pytest.Config) -> Path:
    inipath = config.inipath
    if inipath is not None and inipath.name == "pyproject.toml":
        return inipath
    return config.rootpath / "pyproject.toml"


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the settings (bad ones stop the run) and register the run state."""
    try:
        settings, pinned = resolve(options.cli_values(config), environ(), _pyproject(config))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    state = RunState(config, settings.with_paths_from(config.rootpath), pinned)
    if state.optimize_mode is not None:
        from pytest_dspy_local.optimization import check_dependencies

        try:
            check_dependencies(settings.optimizer)
        except PromptError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(state, "dspy_local_state")
    if config.getoption("dspy_clear_cache") and not hasattr(config, "workerinput"):
        state.clear_cache()
    from pytest_dspy_local.backends import builtin

    config.pluginmanager.register(builtin, "dspy_local_backends")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Free the model."""
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect prompt modules."""
    state = parent.config.stash[STATE_KEY]
    if file_path.parent.name == SNAPSHOT_DIR:
        state.snapshot_files.add(file_path)
    if file_path.suffix != ".py" or not any(fnmatch(file_path.name, p) for p in state.settings.prompt_files):
        return None
    from pytest_dspy_local.collection import make_collector

    return make_collector(parent, file_path)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write snapshots and the audit receipt once (an xdist worker hands its share to the controller)."""
    state = session.config.stash[STATE_KEY]
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["dspy_local"] = state.handover()
        return
    try:
        state.flush_snapshots()
        audit = session.config.getoption("dspy_audit")
        if audit:
            state.write_audit(Path(audit))
        state.write_reports(session.config.getoption("dspy_json"), session.config.getoption("dspy_report"))
    except OSError as exc:
        raise pytest.UsageError(f"dspy-local: cannot write {exc.filename} ({exc.strerror}); fix the path") from None


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: take over a worker's results, snapshots and receipt entries."""
    state = node.config.stash[STATE_KEY]
    state.take_over(getattr(node, "workeroutput", {}).get("dspy_local", {}))


def pytest_report_header(config: pytest.Config) -> str:
    """Name the configured backend and model."""
    state = config.stash[STATE_KEY]
    try:
        backend = state.models.backend_name()
    except ConfigError as exc:
        backend = f"unresolved ({exc})"
    where = f" at {state.settings.base_url}" if state.settings.base_url else ""
    return f"dspy-local: backend {backend}, model {state.settings.model}{where}"


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """After collection: the model's digest when prompts will run; skipped look-alike files."""
    state = config.stash[STATE_KEY]
    lines = []
    if config.option.verbose > 0 or config.option.collectonly:
        lines += [f"dspy-local: not a prompt module: {p} ({why})" for p, why in state.skipped]
    if any(getattr(i, "is_prompt_item", False) for i in items) and not config.option.collectonly:
        from pytest_dspy_local.terminal import model_line

        lines.append(model_line(state))
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
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


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """Show each prompt's score with -v."""
    props = dict(getattr(report, "user_properties", ()))
    if report.when != "call" or "dspy_score" not in props:
        return None
    from pytest_dspy_local.terminal import status_word

    outcome = "passed" if report.passed else "failed"
    return outcome, "." if report.passed else "F", status_word(report.passed, props)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """One line per evaluated prompt and the model-call count."""
    state = config.stash[STATE_KEY]
    if hasattr(config, "workerinput") or not (state.entries or state.written or state.unused_snapshots()):
        return
    from pytest_dspy_local.terminal import snapshot_lines, summary_lines

    terminalreporter.section("dspy-local")
    for line in summary_lines(state.entries, *state.call_totals()):
        terminalreporter.write_line(line)
    for line in snapshot_lines(state.written, state.unused_snapshots()):
        terminalreporter.write_line(line)


@pytest.fixture
def dspy_lm(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The configured local model as a ``dspy.LM``, active (with JSONAdapter) and egress-guarded for the test."""
    state = request.config.stash[STATE_KEY]
    try:
        lm = state.models.lm()
    except PromptError as exc:
        pytest.fail(str(exc), pytrace=False)
    import dspy

    try:
        with state.auditor.audited(request.node.nodeid), dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            yield lm
    except PromptError as exc:  # a connection the egress guard blocked during the test
        pytest.fail(str(exc), pytrace=False)
