"""pytest-dspy-local: DSPy prompts as tested code, on a model on your own machine.

Importing this package imports neither DSPy nor llama.cpp; the helpers below
import them when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_dspy_local.evaluation import EvalResult

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "load_program", "local_lm"]


def evaluate(
    program: Any,
    dataset: Iterable[Any],
    metric: Callable[..., Any],
    *,
    inputs: Sequence[str] | None = None,
) -> EvalResult:
    """Evaluate ``program`` on ``dataset`` (dicts or ``dspy.Example``) with ``metric``.

    Uses the LM active in DSPy's settings (in a test: the ``dspy_lm`` fixture).
    Returns an ``EvalResult`` with ``.score``, ``.parse_failures`` and per-example
    ``.examples``. ``inputs`` defaults to the program's signature input fields.
    """
    from pytest_dspy_local.data import check_inputs, from_fixture
    from pytest_dspy_local.evaluation import evaluate_rows
    from pytest_dspy_local.spec import signature_fields

    fields = tuple(inputs) if inputs is not None else signature_fields(program)[0]
    rows = from_fixture("dataset", list(dataset))
    check_inputs(rows, fields, "evaluate()")
    return evaluate_rows(program, rows, metric, fields)


def load_program(path: str | Path) -> Any:
    """A prompt module's program with its optimized snapshot loaded (see ``loading.load_program``)."""
    from pytest_dspy_local.loading import load_program as load

    return load(path)


def local_lm(model: str = "smollm2-135m", *, backend: str = "auto", base_url: str | None = None) -> Any:
    """A ``dspy.LM`` on a local model through the built-in backends (see ``loading.local_lm``)."""
    from pytest_dspy_local.loading import local_lm as make

    return make(model, backend=backend, base_url=base_url)
