"""Hooks the plugin adds to pytest (registered through ``pytest_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_dspy_local.core.results import PromptResult
    from pytest_dspy_local.core.settings import Settings
    from pytest_dspy_local.models.backends.base import Backend


@pytest.hookspec(firstresult=True)
def pytest_dspy_local_make_backend(name: str, settings: Settings) -> Backend | None:
    """Return a model backend for backend ``name``, or None if this plugin does not provide it.

    ``name`` is the resolved ``--dspy-backend`` (never ``auto``). The built-in
    ``embedded``, ``ollama`` and ``openai`` backends are implementations of this
    hook; a conftest.py implementation adds another (say ``mlx``) or replaces one
    (``tryfirst=True``).
    """


@pytest.hookspec
def pytest_dspy_local_prompt_result(item: pytest.Item, result: PromptResult) -> None:
    """Called with each evaluated prompt's result, before pass/fail is decided."""
