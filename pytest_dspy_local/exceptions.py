"""The plugin's exception types."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_dspy_local.evaluation import EvalResult


class PromptError(Exception):
    """A prompt module, its data or its model cannot be evaluated.

    The message is one line naming the file or setting and the fix; the
    item reports it without a traceback.
    """


class PromptFailure(AssertionError):
    """A prompt scored below its threshold (or regressed); carries the result."""

    def __init__(self, result: EvalResult, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.result = result
        self.reasons = reasons
