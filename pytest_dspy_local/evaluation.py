"""Running a program over its examples and scoring it with its metric.

DSPy's ``Evaluate`` swallows per-example errors and does not tell a parse
failure from a wrong answer; this loop does both, in one thread (llama.cpp
models are not thread-safe).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_dspy_local.backends.base import BackendError
from pytest_dspy_local.data import Row
from pytest_dspy_local.exceptions import PromptError


@dataclass
class ExampleResult:
    """One example: what went in, what was expected, what came back, its score."""

    source: str
    inputs: dict[str, Any]
    expected: dict[str, Any]
    got: dict[str, Any] | None
    score: float
    error: str | None = None
    id: str = ""
    baseline_score: float | None = None
    flip: str | None = None


@dataclass
class EvalResult:
    """A prompt's evaluation: mean score and per-example detail."""

    name: str
    examples: list[ExampleResult]
    threshold: float | None = None
    seconds: float = 0.0
    calls: int = 0
    cached: int = 0
    model: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    nodeid: str = ""
    repeats: int = 1
    reasons: list[str] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    prompt: dict[str, str | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Examples evaluated."""
        return len(self.examples)

    @property
    def score(self) -> float:
        """Mean metric over all examples (a parse failure scores 0)."""
        return sum(e.score for e in self.examples) / self.n if self.examples else 0.0

    @property
    def parse_failures(self) -> int:
        """Examples whose model output did not parse into the output fields."""
        return sum(1 for e in self.examples if e.error is not None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (it travels on the call report, so also across xdist)."""
        return asdict(self)

    def worst(self, count: int) -> list[ExampleResult]:
        """The lowest-scoring examples, parse failures first, in data order on ties."""
        ranked = sorted(enumerate(self.examples), key=lambda p: (p[1].score, p[1].error is None, p[0]))
        return [e for _, e in ranked[:count] if e.score < 1.0]


def metric_value(value: Any, origin: str, source: str) -> float:
    """A metric's return value as a float (bool, int, float, or an object with ``.score``)."""
    number = getattr(value, "score", value)
    if isinstance(number, bool):
        return 1.0 if number else 0.0
    if isinstance(number, (int, float)):
        return float(number)
    raise PromptError(
        f"{origin}: metric returned {value!r} ({type(value).__name__}) for example {source}; "
        "return a number or a bool"
    )


def _predict(program: Any, inputs: dict[str, Any]) -> tuple[Any, str | None]:
    from dspy.utils.exceptions import AdapterParseError

    try:
        return program(**inputs), None
    except AdapterParseError as exc:
        return None, _one_line(str(exc))


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _outputs(prediction: Any) -> dict[str, Any]:
    return dict(prediction.toDict()) if hasattr(prediction, "toDict") else {"output": prediction}


def _score(metric: Callable[..., Any], example: Any, prediction: Any, origin: str, source: str) -> float:
    try:
        value = metric(example, prediction)
    except Exception as exc:  # the metric is user code: report which example broke it
        raise PromptError(
            f"{origin}: metric raised {type(exc).__name__}: {_one_line(str(exc))} on example {source}; fix the metric"
        ) from None
    return metric_value(value, origin, source)


def evaluate_rows(
    program: Any,
    rows: Sequence[Row],
    metric: Callable[..., Any],
    inputs: Sequence[str],
    *,
    name: str = "program",
    origin: str = "evaluate",
) -> EvalResult:
    """Run ``program`` on every row and score it; parse failures score 0 and are counted."""
    import dspy

    started = time.perf_counter()
    results = []
    for row in rows:
        example = dspy.Example(**row.values).with_inputs(*inputs)
        given = {k: row.values[k] for k in inputs}
        expected = {k: v for k, v in row.values.items() if k not in inputs}
        try:
            prediction, error = _predict(program, given)
        except BackendError as exc:
            raise PromptError(str(exc)) from None
        if error is not None:
            results.append(ExampleResult(row.source, given, expected, None, 0.0, error))
            continue
        score = _score(metric, example, prediction, origin, row.source)
        results.append(ExampleResult(row.source, given, expected, _outputs(prediction), score))
    for result in results:
        result.id = example_id(result.inputs)
    return EvalResult(name, results, seconds=time.perf_counter() - started)


def example_id(inputs: dict[str, Any]) -> str:
    """A stable id for an example: sha256 of its inputs as canonical JSON (first 16 hex)."""
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def pool(runs: Sequence[EvalResult]) -> EvalResult:
    """Repeated evaluations of the same rows as one: each example's mean score.

    An example counts as a parse failure only when every repeat failed to parse.
    """
    first = runs[0]
    for index, example in enumerate(first.examples):
        scores = [run.examples[index].score for run in runs]
        example.score = sum(scores) / len(scores)
        errors = [run.examples[index].error for run in runs]
        example.error = errors[0] if all(errors) else None
    first.repeats = len(runs)
    first.seconds = sum(run.seconds for run in runs)
    return first
