"""pytest-dspy-local: DSPy prompts as tested code, on a model on your own machine.

Importing this package imports neither pytest, DSPy nor llama.cpp: ``evaluate``,
``load_program`` and ``local_lm`` (defined in ``api.py``) are loaded when first used, and
import what they need when called. (The pytest entry point, plugin/hooks.py, lives in
this package too, so every pytest run imports this file.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_dspy_local.api import evaluate, load_program, local_lm

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "load_program", "local_lm"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "load_program", "local_lm"):
        from pytest_dspy_local import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
