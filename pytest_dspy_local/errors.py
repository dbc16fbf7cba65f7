"""The plugin's one exception hierarchy.

Every message is one line that names the file, setting or endpoint and the fix;
``plugin/outcomes.py`` is the one place that maps these kinds to pytest outcomes:

- ``UsageError``: a bad setting or flag; stops the run before any item (exit code 4).
- ``PromptError``: one prompt item cannot be evaluated (bad module, data, snapshot,
  unreachable model); the item errors with the message and no traceback.
  ``BackendError`` is the kind a model backend raises.
- ``PromptFailure``: the prompt was evaluated and scored below its threshold or
  regressed against its baseline; the item fails with a readable report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_dspy_local.core.results import PromptResult


class DspyLocalError(Exception):
    """Base of the plugin's errors: a one-line message naming what to fix."""


class UsageError(DspyLocalError):
    """A setting, flag or configuration file is invalid; the run stops before any item."""


class PromptError(DspyLocalError):
    """A prompt module, its data, its snapshot or its model cannot be evaluated."""


class BackendError(PromptError):
    """A model backend cannot serve: unreachable server, unknown model, timeout."""


class PromptFailure(DspyLocalError, AssertionError):
    """A prompt scored below its threshold (or regressed); carries the result."""

    def __init__(self, result: PromptResult) -> None:
        super().__init__("; ".join(result.reasons))
        self.result = result
