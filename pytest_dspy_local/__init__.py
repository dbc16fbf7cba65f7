"""pytest-dspy-local: DSPy prompts as tested code, on a model on your own machine.

Importing this package imports neither pytest, DSPy nor llama.cpp; the functions
below (defined in ``api.py``) import what they need when called.
"""

from __future__ import annotations

from pytest_dspy_local.api import evaluate, load_program, local_lm

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "load_program", "local_lm"]
