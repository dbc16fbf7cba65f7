"""Fixtures for hand-written evaluation tests (registered as a plugin by ``plugin.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pytest_dspy_local.exceptions import PromptError
from pytest_dspy_local.session import STATE_KEY


@pytest.fixture
def dspy_lm(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The configured local model as a ``dspy.LM``, active (with JSONAdapter) and egress-guarded for the test."""
    state = request.config.stash[STATE_KEY]
    try:
        lm = state.lm()
    except PromptError as exc:
        pytest.fail(str(exc), pytrace=False)
    import dspy

    try:
        with state.audited(request.node.nodeid), dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            yield lm
    except PromptError as exc:  # a connection the egress guard blocked during the test
        pytest.fail(str(exc), pytrace=False)
