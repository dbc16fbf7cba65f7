"""Start-up: what every pytest run pays for the plugin, and the run state made on first use.

A run whose project configures nothing (``options.configured``) and that collects no prompt
module or snapshot file never makes a ``RunState``: it imports the entry point, the options
and this module, and nothing that reads settings, models or the egress guard
(bench/bench_overhead.py measures it; tests/test_unused.py pins the modules). A project
that configures the plugin gets its state at configure, so a bad setting stops the run
before any item.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_dspy_local.core.defaults import DEFAULT_BACKEND, DEFAULT_MODEL

if TYPE_CHECKING:
    from pytest_dspy_local.core.settings import Settings
    from pytest_dspy_local.plugin.state import RunState

STATE_KEY = pytest.StashKey["RunState"]()
# prompt_*.py files that are not prompt modules, with the reason (listed with -v or --collect-only)
SKIPPED_KEY = pytest.StashKey[list[tuple[Path, str]]]()
# names of the prompt modules this process collected (a [tool.dspy_local.prompts.<name>] table must name one)
COLLECTED_KEY = pytest.StashKey[set[str]]()


def run_state(config: pytest.Config) -> RunState:
    """The run's state: settings resolved and checked (a bad one stops the run), made once."""
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        from pytest_dspy_local.plugin import backends, checks, options
        from pytest_dspy_local.plugin.outcomes import stopping_on_usage_errors
        from pytest_dspy_local.plugin.state import RunState

        with stopping_on_usage_errors():
            run = options.resolve(config)
            checks.check_run(run)
            state = config.stash[STATE_KEY] = RunState(config, run)
            if run.flags.clear_cache and not hasattr(config, "workerinput"):
                state.clear_cache()
        config.pluginmanager.register(backends, "dspy_local_backends")
    return state


def header(settings: Settings | None) -> str:
    """The report header's line: the backend and model (``None``: nothing configured, the defaults)."""
    if settings is None:
        return f"dspy-local: backend {DEFAULT_BACKEND}, model {DEFAULT_MODEL}"
    from pytest_dspy_local.models.backends.builtin import resolve_backend_name

    where = f" at {settings.base_url}" if settings.base_url else ""
    return f"dspy-local: backend {resolve_backend_name(settings)}, model {settings.model}{where}"
