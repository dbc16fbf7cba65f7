"""The built-in backends as the last implementation of ``pytest_dspy_local_make_backend``.

A conftest.py implementation runs first and may add a backend or replace one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_dspy_local.models.backends.builtin import builtin_backend

if TYPE_CHECKING:
    from pytest_dspy_local.core.settings import Settings
    from pytest_dspy_local.models.backends.base import Backend


@pytest.hookimpl(trylast=True)
def pytest_dspy_local_make_backend(name: str, settings: Settings) -> Backend | None:
    """Provide the embedded, ollama and openai backends."""
    return builtin_backend(name, settings)
