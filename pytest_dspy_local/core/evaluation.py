"""Running a program over its examples and scoring it with its metric.

DSPy's ``Evaluate`` swallows per-example errors and does not tell a parse
failure from a wrong answer; this loop does both. With ``concurrency`` > 1 it
keeps that many examples in flight on worker threads (for servers that batch);
results come back in data order, identical to a serial run.

A parse failure says why when the model engine can tell (answer cut off at
``max_tokens``, empty, not JSON despite the schema): the engine reports each answer
through ``heard`` (models/ may import core, never the reverse), into a list that
``_predict`` keeps in a context variable. Each example runs in its own context
(``copy_context`` per worker task), so concurrent examples never see each other's answers.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.data import Row
from pytest_dspy_local.core.results import Evaluation, ExampleResult
from pytest_dspy_local.core.spec import prompt_name, signature_fields
from pytest_dspy_local.errors import BackendError, DspyLocalError, PromptError

if TYPE_CHECKING:
    import dspy


EXCERPT_CHARS = 60


@dataclass(frozen=True)
class Answer:
    """What the model engine saw of one answer: enough to explain why it did not parse."""

    text: str
    finish_reason: str  # "stop", or "length" when cut off at max_tokens
    max_tokens: int
    constrained: bool  # the request carried the output fields' JSON schema
    answered_by: str  # "the embedded model", "the server at http://..."


_ANSWERS: contextvars.ContextVar[list[Answer] | None] = contextvars.ContextVar("dspy_local_answers", default=None)


def heard(answer: Answer) -> None:
    """Record a model answer for the example evaluated in this context (outside an evaluation: nothing)."""
    answers = _ANSWERS.get()
    if answers is not None:
        answers.append(answer)


def metric_value(value: Any, origin: str, source: str) -> float:
    """A metric's return value as a score in [0, 1] (bool, number, or an object with ``.score``)."""
    number = getattr(value, "score", value)
    if getattr(number, "shape", None) == () and hasattr(number, "item"):
        number = number.item()  # a NumPy scalar (np.True_, np.float32): what `np.mean(...) > x` returns
    if isinstance(number, bool):
        return 1.0 if number else 0.0
    if not isinstance(number, numbers.Real):
        raise PromptError(
            f"{origin}: metric returned {value!r} ({type(value).__name__}) for example {source}; "
            "return a number or a bool"
        )
    score = float(number)
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        # Scores are averaged and compared with a threshold in [0, 1]; nan would poison every mean.
        raise PromptError(
            f"{origin}: metric returned {score!r} for example {source}; "
            "return a score between 0 and 1 (or a bool)"
        )
    return score


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "...")


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _max_tokens_fix(origin: str) -> str:
    if origin.endswith(".py"):
        return f"raise `max_tokens` in [tool.dspy_local.prompts.{prompt_name(Path(origin))}] or [tool.dspy_local]"
    return "raise the LM's `max_tokens`"


def cut_off(answer: Answer) -> bool:
    """Did the model stop at ``max_tokens`` mid-answer? A whole JSON object is complete even then
    (llama.cpp says "length" when the closing brace was the last token allowed, before its end token)."""
    return answer.finish_reason == "length" and not _is_json_object(answer.text)


def why_unparseable(answer: Answer, origin: str) -> str | None:
    """Why an answer did not parse, when the engine's view of it tells (else None: DSPy's reason stands)."""
    if cut_off(answer):
        return f"answer cut off at max_tokens={answer.max_tokens}: {_excerpt(answer.text)}; {_max_tokens_fix(origin)}"
    if not answer.text.strip():
        return f"{answer.answered_by} returned an empty answer; see its log"
    if answer.constrained and not _is_json_object(answer.text):
        return (f"{answer.answered_by} ignored the JSON schema: the answer is not JSON ({_excerpt(answer.text)}); "
                "use a server that honours `response_format` (llama.cpp, vLLM, Ollama, LM Studio)")
    return None


def _predict(program: dspy.Module, inputs: dict[str, Any], origin: str) -> tuple[Any, str | None]:
    from dspy.utils.exceptions import AdapterParseError

    answers: list[Answer] = []
    token = _ANSWERS.set(answers)
    try:
        prediction = program(**inputs)
        # DSPy's JSON repair closes a truncated object ('{"answer": "The sky' -> 'The sky'): an
        # answer the backend stopped at max_tokens is a parse failure even when it parsed.
        cut = next((a for a in answers if cut_off(a)), None)
        return (None, why_unparseable(cut, origin)) if cut is not None else (prediction, None)
    except AdapterParseError as exc:
        # The adapter parses right after each call: the last answer is the one that failed.
        why = why_unparseable(answers[-1], origin) if answers else None
        return None, why or _one_line(str(exc))
    except DspyLocalError:
        raise
    except Exception as exc:
        # DSPy wraps an error raised inside the engine (a backend's one-line error) in its own
        # LMUnexpectedError; report the plugin's message, not DSPy's wrapper and its traceback.
        cause = plugin_cause(exc)
        if cause is None:
            raise
        raise cause from None
    finally:
        _ANSWERS.reset(token)


def plugin_cause(exc: BaseException) -> DspyLocalError | None:
    """The plugin's own error in ``exc``'s chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DspyLocalError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _outputs(prediction: Any) -> dict[str, Any]:
    if hasattr(prediction, "toDict"):
        return dict(prediction.toDict())
    return dict(prediction) if isinstance(prediction, Mapping) else {"output": prediction}


def _score(metric: Callable[..., Any], example: Any, prediction: Any, origin: str, row: Row,
           fields: frozenset[str]) -> float:
    try:
        value = metric(example, prediction)
    except Exception as exc:  # the metric is user code: report which example broke it
        text = _one_line(str(exc))
        # A row without a field the others carry (an expected output left out) breaks most metrics.
        lacking = [f for f in sorted(fields - row.values.keys()) if f in text]
        fix = (f"the row lacks {lacking[0]!r}, which other rows have: add it, or fix the metric" if lacking
               else "fix the metric")
        raise PromptError(
            f"{origin}: metric raised {type(exc).__name__}: {text} on example {row.source}; {fix}"
        ) from None
    return metric_value(value, origin, row.source)


@dataclass(frozen=True)
class _Shared:
    """What every example of one evaluation shares."""

    program: dspy.Module
    metric: Callable[..., Any]
    inputs: Sequence[str]
    origin: str
    fields: frozenset[str]  # every key any row has
    outputs: frozenset[str]  # the program's output fields; other non-input keys are row metadata


def _example(task: _Shared, row: Row, key: str) -> ExampleResult:
    import dspy

    example = dspy.Example(**row.values).with_inputs(*task.inputs)  # the metric sees every key, metadata too
    given = {k: row.values[k] for k in task.inputs}
    # Expected: the output fields; a key that is neither input nor output is row metadata, not a label.
    expected = {k: v for k, v in row.values.items()
                if k not in task.inputs and (not task.outputs or k in task.outputs)}
    try:
        prediction, error = _predict(task.program, given, task.origin)
    except BackendError as exc:
        raise BackendError(f"example {row.source}: {exc}") from None
    if error is not None:
        return ExampleResult(row.source, given, expected, None, 0.0, error, id=key)
    if prediction is None:  # else the metric would be blamed for the program's missing `return`
        raise PromptError(f"{task.origin}: the program returned None for example {row.source}; "
                          "return the outputs from forward(), e.g. `return self.predict(...)`")
    score = _score(task.metric, example, prediction, task.origin, row, task.fields)
    return ExampleResult(row.source, given, expected, _outputs(prediction), score, id=key)


Task = Callable[[tuple[Row, str]], ExampleResult]
OnExample = Callable[[ExampleResult], None]


def _serial(task: Task, rows: Sequence[tuple[Row, str]], on_example: OnExample) -> tuple[ExampleResult, ...]:
    results = []
    for row in rows:
        results.append(task(row))
        on_example(results[-1])
    return tuple(results)


def _first_error(futures: Sequence[Future[ExampleResult]]) -> BaseException | None:
    # The lowest-numbered example that failed: the one a serial run would have stopped on.
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is not None:
            return future.exception()
    return None


def _reporter(on_example: OnExample) -> Callable[[Future[ExampleResult]], None]:
    def report(future: Future[ExampleResult]) -> None:
        if not future.cancelled() and future.exception() is None:
            on_example(future.result())

    return report


def _concurrent(
    task: Task, rows: Sequence[tuple[Row, str]], on_example: OnExample, workers: int
) -> tuple[ExampleResult, ...]:
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dspy-local-eval")
    try:
        # Each task runs in a copy of this context, so DSPy's dspy.context(lm=...) reaches the threads.
        futures = [pool.submit(contextvars.copy_context().run, task, row) for row in rows]
        for future in futures:
            future.add_done_callback(_reporter(on_example))
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            for future in futures:
                future.cancel()  # queued examples never start; running ones finish (bounded by `timeout`)
            wait(futures)
            error = _first_error(futures)
            if error is not None:
                raise error
        return tuple(f.result() for f in futures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def evaluate_rows(
    program: dspy.Module,
    rows: Sequence[Row],
    metric: Callable[..., Any],
    inputs: Sequence[str],
    *,
    origin: str = "evaluate",
    concurrency: int = 1,
    on_example: OnExample | None = None,
) -> Evaluation:
    """Run ``program`` on every row and score it; parse failures score 0 and are counted.

    Up to ``concurrency`` examples are in flight at once; ``on_example`` hears of each as it
    finishes (from a worker thread when concurrent). The first error stops the evaluation.
    """
    started = time.perf_counter()
    shared = _Shared(program, metric, inputs, origin, frozenset(k for row in rows for k in row.values),
                     frozenset(signature_fields(program)[1]))

    def task(keyed: tuple[Row, str]) -> ExampleResult:
        return _example(shared, *keyed)

    notify = on_example or (lambda _: None)
    keyed = list(zip(rows, example_ids([{k: r.values[k] for k in inputs} for r in rows]), strict=True))
    if concurrency <= 1 or len(rows) <= 1:
        results = _serial(task, keyed, notify)
    else:
        results = _concurrent(task, keyed, notify, min(concurrency, len(rows)))
    return Evaluation(results, seconds=time.perf_counter() - started)


def example_id(inputs: dict[str, Any]) -> str:
    """A stable id for an example: sha256 of its inputs as canonical JSON (first 16 hex)."""
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def occurrences(ids: Sequence[str]) -> tuple[str, ...]:
    """``ids`` made unique by position: the n-th repeat of an id (n >= 2) becomes ``id#n``.

    Identical rows are separate examples (each is scored, paired and counted); an id seen once
    is unchanged, so baselines of data without repeats keep their ids.
    """
    seen: dict[str, int] = {}
    unique = []
    for key in ids:
        seen[key] = seen.get(key, 0) + 1
        unique.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return tuple(unique)


def example_ids(inputs: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """Each row's example id, in data order: its inputs' hash, numbered from the second repeat on."""
    return occurrences([example_id(given) for given in inputs])


def _pooled(examples: Sequence[ExampleResult]) -> ExampleResult:
    errors = [e.error for e in examples]
    score = sum(e.score for e in examples) / len(examples)
    return replace(examples[0], score=score, error=errors[0] if all(errors) else None)


def pool(runs: Sequence[Evaluation]) -> Evaluation:
    """Repeated evaluations of the same rows as one: each example's mean score.

    An example counts as a parse failure only when every repeat failed to parse.
    """
    examples = tuple(_pooled(same) for same in zip(*(run.examples for run in runs), strict=True))
    return Evaluation(examples, seconds=sum(run.seconds for run in runs), repeats=len(runs))
