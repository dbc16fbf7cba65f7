"""What a prompt module declares: program, metric, threshold, inputs.

``declared_names`` reads the source without importing it, so unrelated files
that match the pattern (say ``prompt_templates.py``) are never imported.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.errors import PromptError

REQUIRED = ("program", "metric")

if TYPE_CHECKING:
    import dspy


def prompt_name(path: Path) -> str:
    """``prompt_triage.py`` -> ``triage``."""
    stem = path.stem
    return stem[len("prompt_"):] if stem.startswith("prompt_") and len(stem) > 7 else stem


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def declared_names(path: Path) -> set[str]:
    """Which of ``program`` and ``metric`` the module binds at top level (incl. under if/try/with)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set(REQUIRED)  # let the import report the syntax error
    names: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        names |= _bound_names(node)
        for block in ("body", "orelse", "finalbody"):
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                stack.extend(getattr(node, block, []))
        for handler in getattr(node, "handlers", []):
            stack.extend(handler.body)
    return names & set(REQUIRED)


@dataclass
class PromptSpec:
    """A prompt module's declarations, checked."""

    name: str
    path: Path
    program: dspy.Module
    metric: Callable[..., Any]
    threshold: float | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def make_program(module: ModuleType, path: Path) -> dspy.Module:
    import dspy

    program = module.program
    if not isinstance(program, dspy.Module) and callable(program) and not isinstance(program, type):
        program = program()
    if not isinstance(program, dspy.Module):
        raise PromptError(
            f"{path}: `program` must be a dspy.Module or a zero-argument function returning one, "
            f"got {type(program).__name__}; e.g. program = dspy.Predict(MySignature)"
        )
    return program


def _threshold(module: ModuleType, path: Path) -> float | None:
    # A number outside [0, 1] is kept: the item then fails showing score and threshold
    # and says the threshold cannot be met (see collection.PromptItem.runtest).
    value = getattr(module, "threshold", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PromptError(f"{path}: `threshold = {value!r}` must be a number between 0 and 1")
    return float(value)


def signature_fields(program: dspy.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    inputs: list[str] = []
    outputs: list[str] = []
    for _, predictor in program.named_predictors():
        signature = predictor.signature
        inputs += [n for n in signature.input_fields if n not in inputs]
        outputs += [n for n in signature.output_fields if n not in outputs]
    return tuple(inputs), tuple(outputs)


def _inputs(module: ModuleType, path: Path, default: Sequence[str]) -> tuple[str, ...]:
    value = getattr(module, "inputs", None)
    if value is None:
        return tuple(default)
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise PromptError(f"{path}: `inputs` must be a tuple of field names, e.g. inputs = (\"ticket\",)")
    return tuple(value)


def check_declared(module: ModuleType, path: Path) -> None:
    """An imported prompt module must define both ``program`` and ``metric``."""
    missing = [n for n in REQUIRED if not hasattr(module, n)]
    if missing:
        present = [f"`{n}`" for n in REQUIRED if n not in missing] or ["neither `program` nor `metric`"]
        raise PromptError(f"{path}: defines {present[0]} but no `{missing[0]}`; add `{missing[0]}`")


def load_spec(module: ModuleType, path: Path) -> PromptSpec:
    """Check a prompt module's declarations and return them."""
    check_declared(module, path)
    metric = module.metric
    if not callable(metric):
        raise PromptError(f"{path}: `metric` must be a function (example, prediction, trace=None) -> number")
    program = make_program(module, path)
    signature_inputs, outputs = signature_fields(program)
    inputs = _inputs(module, path, signature_inputs)
    return PromptSpec(prompt_name(path), path, program, metric, _threshold(module, path), inputs, outputs)
