"""What a prompt module declares: program, metric, threshold, inputs (read by importing it;
core/declared.py decides from the source whether a file is one at all)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.declared import REQUIRED
from pytest_dspy_local.errors import PromptError

if TYPE_CHECKING:
    import dspy


def prompt_name(path: Path) -> str:
    """``prompt_triage.py`` -> ``triage``."""
    stem = path.stem
    return stem[len("prompt_"):] if stem.startswith("prompt_") and len(stem) > 7 else stem



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
    if isinstance(program, type) and issubclass(program, dspy.Module):
        program = _instance(program, path)  # `program = MyModule`: the class is its own zero-argument factory
    elif not isinstance(program, dspy.Module) and callable(program) and not isinstance(program, type):
        program = program()
    if not isinstance(program, dspy.Module):
        # A class shows its own name, not its metaclass's (DSPy's ProgramMeta, SignatureMeta).
        got = f"class {program.__name__}" if isinstance(program, type) else type(program).__name__
        raise PromptError(
            f"{path}: `program` must be a dspy.Module or a zero-argument function returning one, "
            f"got {got}; e.g. program = dspy.Predict(MySignature)"
        )
    return program


def _instance(cls: type[dspy.Module], path: Path) -> dspy.Module:
    import inspect

    try:
        inspect.signature(cls.__init__).bind(None)  # DSPy's metaclass hides the signature of cls() itself
    except TypeError as exc:
        raise PromptError(f"{path}: `program = {cls.__name__}` needs constructor arguments ({exc}); "
                          f"write program = {cls.__name__}(...) with them") from None
    except ValueError:  # no signature to inspect: let the call say
        pass
    return cls()


def _threshold(module: ModuleType, path: Path) -> float | None:
    # A number outside [0, 1] is refused when the item runs (plugin/collection.py check_declarations).
    value = getattr(module, "threshold", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PromptError(f"{path}: `threshold = {value!r}` must be a number between 0 and 1")
    return float(value)


def signature_fields(program: dspy.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every predictor's input and output fields, in predictor order (a pipeline's intermediate ones too)."""
    inputs: list[str] = []
    outputs: list[str] = []
    for _, predictor in program.named_predictors():
        signature = predictor.signature
        inputs += [n for n in signature.input_fields if n not in inputs]
        outputs += [n for n in signature.output_fields if n not in outputs]
    return tuple(inputs), tuple(outputs)


def forward_parameters(program: dspy.Module, *, required: bool = True) -> tuple[str, ...]:
    """The named parameters ``forward()`` takes (only those without a default when ``required``)."""
    # Read from the class: DSPy warns ("Calling module.forward(...) directly is discouraged") whenever
    # `forward` is looked up on an instance outside its own __call__.
    forward = getattr(type(program), "forward", None)
    if forward is None:
        return ()
    try:
        parameters = list(inspect.signature(forward).parameters.values())[1:]  # without `self`
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return ()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    # A parameter with a default is a knob (k=3), not a data field; `inputs = (...)` can still name it.
    return tuple(p.name for p in parameters
                 if p.kind in named and (not required or p.default is inspect.Parameter.empty))


def _own_signature(program: dspy.Module) -> Any:
    """The signature a module declares for itself (Predict, ChainOfThought, ReAct...), if any."""
    signature = getattr(program, "signature", None)
    return signature if hasattr(signature, "input_fields") and hasattr(signature, "output_fields") else None


def program_fields(program: dspy.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The program's inputs and outputs: what its caller passes and gets back, not its internals.

    Inputs are ``forward()``'s required named parameters; for a ``forward(**kwargs)`` module, the
    signature it declares (ReAct's, not its ``trajectory``), else its first predictor's inputs.
    Outputs are the declared signature's, else every predictor's (a pipeline's final fields among them).
    """
    all_inputs, all_outputs = signature_fields(program)
    own = _own_signature(program)
    if own is not None:
        declared_in, outputs = tuple(own.input_fields), tuple(own.output_fields)
    else:
        predictors = program.named_predictors()
        declared_in = tuple(predictors[0][1].signature.input_fields) if predictors else all_inputs
        outputs = all_outputs
    return forward_parameters(program) or declared_in, outputs


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
    program_inputs, outputs = program_fields(program)
    inputs = _inputs(module, path, program_inputs)
    return PromptSpec(prompt_name(path), path, program, metric, _threshold(module, path), inputs, outputs)
