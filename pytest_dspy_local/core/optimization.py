"""``--optimize``: run a DSPy optimizer on local models and decide whether to keep the result.

The data is split (seeded) into a train part for the optimizer and a held-out
part for scoring; the candidate replaces the current program only when its
held-out gain passes a one-sided paired test (core/acceptance.py; or with
``--optimize=force``). With a weak proposal model "no improvement" is a normal outcome.
Before it runs, the optimizer's cost is projected (core/projection.py); a budget
stops it, keeping its best candidate so far, which faces the same test.
With ``--dspy-target``, a winning candidate is also scored on each target's held-out
rows (core/transfer.py); a significant loss there is reported loudly, and with
``require_transfer`` the candidate is not kept.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.acceptance import decide, power_problem
from pytest_dspy_local.core.data import Dataset, Row
from pytest_dspy_local.core.projection import Projection, project
from pytest_dspy_local.core.results import ChangedRow, Evaluation, OptimizationOutcome
from pytest_dspy_local.core.settings import OPTIMIZERS, Budget, Settings, did_you_mean
from pytest_dspy_local.core.snapshot import SnapshotPaths
from pytest_dspy_local.core.spec import PromptSpec
from pytest_dspy_local.errors import PromptError, UsageError

if TYPE_CHECKING:
    import dspy

# Settings the plugin owns; a knob in pyproject may not override them.
RESERVED = {"metric", "prompt_model", "task_model", "reflection_lm", "student", "trainset", "valset", "seed",
            "num_threads", "requires_permission_to_run", "teacher"}
MIPRO_MIN_TRAIN = 2  # MIPROv2 refuses a smaller trainset when no valset is given
_NEEDS = {"mipro": ("optuna", "pip install 'pytest-dspy-local[optimize]'  (or: pip install optuna)")}


def check_dependencies(optimizer: str) -> None:
    """Fail before any model call when the optimizer's optional dependency is missing."""
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"--dspy-optimizer: unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    needed = _NEEDS.get(optimizer)
    if needed is None:
        return
    try:
        importlib.import_module(needed[0])
    except ImportError:
        raise UsageError(
            f"--dspy-optimizer={optimizer} needs {needed[0]}, which is not installed: {needed[1]}"
        ) from None


def split_rows(rows: Sequence[Row], train_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A seeded shuffle, then the first part trains and the rest is held out (each at least 1)."""
    if len(rows) < 2:
        raise PromptError(f"optimizing needs at least 2 examples (one to train, one held out); got {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    cut = min(max(1, round(len(rows) * train_fraction)), len(rows) - 1)
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


def _optimizer_class(name: str) -> Any:
    import dspy

    return {"mipro": dspy.MIPROv2, "bootstrap": dspy.BootstrapFewShot, "gepa": dspy.GEPA}[name]


def route_knobs(name: str, knobs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``[tool.dspy_local.optimizers.<name>]`` knobs into constructor and compile arguments."""
    cls = _optimizer_class(name)
    init_params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    compile_params = set(inspect.signature(cls.compile).parameters) - {"self"}
    init: dict[str, Any] = {}
    comp: dict[str, Any] = {}
    for key, value in knobs.items():
        if key in RESERVED or (key not in init_params and key not in compile_params):
            allowed = sorted((init_params | compile_params) - RESERVED)
            raise UsageError(
                f"[tool.dspy_local.optimizers.{name}] {key}: not a setting of {cls.__name__} the plugin passes on;"
                f"{did_you_mean(key, allowed)} use one of: {', '.join(allowed)}"
            )
        (init if key in init_params else comp)[key] = value
    return init, comp


def _gepa_metric(metric: Callable[..., Any]) -> Callable[..., Any]:
    """GEPA calls metrics with five arguments; DSPy metrics take three."""

    def wrapped(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        return metric(gold, pred, trace)

    return wrapped


class Meter:
    """Model requests and seconds since the optimizer started, against its projection and budget."""

    def __init__(self, requests: Callable[[], int], projection: Projection, budget: Budget | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._requests, self._clock = requests, clock
        self.projection, self.budget = projection, budget
        self._start_requests, self._start = requests(), clock()
        self.reached = False
        self.seconds_per_call: float | None = None  # from the timed held-out evaluation, until calls are timed here

    @property
    def used(self) -> int:
        """Requests the optimizer made so far (answered by a model or the cache)."""
        return self._requests() - self._start_requests

    @property
    def elapsed(self) -> float:
        """Seconds since the optimizer started."""
        return self._clock() - self._start

    def _per_call(self) -> float | None:
        return self.elapsed / self.used if self.used else self.seconds_per_call

    def text(self) -> str:
        """``45 of ~130 model calls, about 40s left``."""
        total = self.projection.optimizer_calls
        line = f"{self.used} of ~{total} projected model calls"
        per_call = self._per_call()
        if per_call is not None and self.used:
            line += f", about {max(0, total - self.used) * per_call:.0f}s left"
        return line

    def over_budget(self, next_calls: int) -> bool:
        """Would ``next_calls`` more calls pass the budget? Remembers that the budget was reached."""
        budget = self.budget
        if budget is None:
            return False
        if budget.calls is not None:
            over = self.used + next_calls > budget.calls
        else:
            per_call = self._per_call() or 0.0
            over = self.elapsed + next_calls * per_call > (budget.seconds or 0.0)
        self.reached = self.reached or over
        return over


@contextmanager
def stop_between_trials(meter: Meter) -> Iterator[None]:
    """Let MIPROv2 stop between trials when the next trial would pass the budget; it then returns its best so far.

    MIPROv2 runs its trials with ``optuna`` ``Study.optimize`` and keeps the best program in a local
    variable, so the only clean stop is optuna's own: a callback that calls ``study.stop()`` after a
    trial. ``Study.optimize`` is wrapped for the block to add that callback (and to run no trial when
    the budget is already spent); an exception would instead lose the best program.
    """
    try:
        import optuna
    except ImportError:  # check_dependencies refuses mipro without optuna first; this keeps the promise
        raise UsageError(f"--dspy-optimizer=mipro needs optuna, which is not installed: {_NEEDS['mipro'][1]}") from None

    original = optuna.study.Study.optimize
    per_trial = meter.projection.trial_calls

    def stop_when_over(study: optuna.Study, trial: Any) -> None:
        if meter.over_budget(per_trial):
            study.stop()

    def optimize(study: optuna.Study, func: Any, *args: Any, **kwargs: Any) -> None:
        if meter.over_budget(per_trial):
            return
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), stop_when_over]
        original(study, func, *args, **kwargs)

    optuna.study.Study.optimize = optimize  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        optuna.study.Study.optimize = original  # type: ignore[method-assign]


@dataclass
class OptimizerRun:
    """What an optimizer needs besides the program and data."""

    name: str
    knobs: Mapping[str, Any]
    task_lm: dspy.LM
    prompt_lm: dspy.LM
    seed: int
    num_threads: int = 1  # task-model calls in flight while candidates are scored
    meter: Meter | None = None  # its budget stops MIPROv2 between trials


def budgeted_knobs(name: str, knobs: Mapping[str, Any], budget: Budget | None, predictors: int,
                   train: int) -> tuple[dict[str, Any], int]:
    """Knobs and train rows that keep BootstrapFewShot and GEPA within a budget in calls (MIPROv2 stops itself)."""
    result = dict(knobs)
    if budget is None or budget.calls is None:
        return result, train
    if name == "bootstrap":
        rounds = int(result.get("max_rounds", 1) or 1)
        return result, max(1, min(train, budget.calls // (rounds * predictors)))
    if name == "gepa":
        for key in ("auto", "max_full_evals", "max_metric_calls"):
            result.pop(key, None)
        result["max_metric_calls"] = max(1, budget.calls // predictors)
    return result, train


def run_optimizer(
    run: OptimizerRun, program: dspy.Module, metric: Callable[..., Any], trainset: list[dspy.Example]
) -> dspy.Module:
    """Compile a copy of ``program`` with the chosen optimizer; returns the candidate."""
    import dspy

    init, comp = route_knobs(run.name, run.knobs)
    student = copy.deepcopy(program)
    with dspy.context(lm=run.task_lm, adapter=dspy.JSONAdapter()):
        if run.name == "mipro":
            # MIPROv2 refuses num_candidates / num_trials alongside `auto`.
            init = {"auto": None if "num_candidates" in init or "num_trials" in comp else "light", **init}
            optimizer = dspy.MIPROv2(metric, prompt_model=run.prompt_lm, task_model=run.task_lm,
                                     num_threads=run.num_threads, seed=run.seed, **init)
            # The seed goes to the constructor: compile(seed=0) is silently replaced (`seed or self.seed`).
            if run.meter is None or run.meter.budget is None:
                return optimizer.compile(student, trainset=trainset, **comp)
            with stop_between_trials(run.meter):
                return optimizer.compile(student, trainset=trainset, **comp)
        if run.name == "bootstrap":
            return dspy.BootstrapFewShot(metric=metric, **init).compile(student, trainset=trainset, **comp)
        # GEPA takes exactly one budget: auto, max_full_evals or max_metric_calls.
        budgets = {"auto", "max_full_evals", "max_metric_calls"}
        init = init if budgets & set(init) else {"auto": "light", **init}
        gepa = dspy.GEPA(_gepa_metric(metric), reflection_lm=run.prompt_lm, num_threads=run.num_threads,
                         seed=run.seed, **init)
        return gepa.compile(student, trainset=trainset, **comp)


_TRIAL = re.compile(r"Trial (\d+) / (\d+)")
_FULL = re.compile(r"Trial \d+ / \d+ - Full Evaluation")
_BEST = re.compile(r"Best[^:]*score[^:]*: ([0-9.]+)")
_ITERATION = re.compile(r"^Iteration (\d+):")
_STEP = re.compile(r"STEP (\d): ([A-Z ]+)")


class ProgressHandler(logging.Handler):
    """Turns DSPy's optimizer log lines into short progress lines with calls used of the projection."""

    def __init__(self, write: Callable[[str], None], meter: Meter) -> None:
        super().__init__(logging.INFO)
        self._write, self._meter = write, meter
        self.best: float | None = None
        self.trials = 0  # trials started, counted here: MIPROv2's own numbers include its full evaluations
        self._fulls = 0
        self.trial = ""

    def emit(self, record: logging.LogRecord) -> None:
        """Report steps, trials, full evaluations and the best score so far."""
        message = record.getMessage()
        if best := _BEST.search(message):
            self.best = float(best.group(1))
        elif step := _STEP.search(message):
            self._write(f"step {step.group(1)}: {step.group(2).strip().lower()} ({self._meter.text()})")
        elif _FULL.search(message):
            self._full(message)
        elif (trial := _TRIAL.search(message)) and trial.group(0) != self.trial:
            self.trial = trial.group(0)
            total = self._meter.projection.trials
            self.trials = min(self.trials + 1, total) if total else self.trials + 1
            of = f"/{total}" if total else ""
            self._write(f"trial {self.trials}{of}, best so far {self._best()} ({self._meter.text()})")
        elif (iteration := _ITERATION.search(message)) and iteration.group(0) != self.trial:
            self.trial = iteration.group(0)  # GEPA
            self._write(f"iteration {iteration.group(1)}, best so far {self._best()} ({self._meter.text()})")

    def _full(self, message: str) -> None:
        if "Default Program" in message:
            self._write(f"full evaluation of the current program ({self._meter.text()})")
            return
        self._fulls += 1
        final = self.trials >= self._meter.projection.trials
        label = "final full evaluation" if final else f"full evaluation {self._fulls}"
        self._write(f"{label} of the best trial so far ({self._meter.text()})")

    def _best(self) -> str:
        if self.best is None:
            return "-"
        # MIPROv2 logs percentages, GEPA fractions; show both as a mean metric in [0, 1].
        return f"{self.best / 100 if self.best > 1 else self.best:.3f}"


@contextmanager
def progress(write: Callable[[str], None], meter: Meter) -> Iterator[ProgressHandler]:
    """Route DSPy's optimizer logs to ``write`` (and not to DSPy's own handlers) for the block."""
    logger = logging.getLogger("dspy.teleprompt")
    handler = ProgressHandler(write, meter)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _examples(rows: Sequence[Row], inputs: Sequence[str]) -> list[dspy.Example]:
    import dspy

    return [dspy.Example(**r.values).with_inputs(*inputs) for r in rows]


Evaluator = Callable[["dspy.Module", Sequence[Row]], Evaluation]


@dataclass(frozen=True)
class OptimizeJob:
    """One prompt to optimize: its spec and data, where its snapshot is, and the run's choices."""

    spec: PromptSpec
    dataset: Dataset
    paths: SnapshotPaths
    baseline: Mapping[str, Any] | None
    settings: Settings
    force: bool


@dataclass(frozen=True)
class OptimizerModels:
    """The models an optimizer uses, an evaluator on the task model, and a request counter for progress."""

    task_lm: dspy.LM
    prompt_lm: dspy.LM
    evaluate: Evaluator
    requests: Callable[[], int]  # model requests so far over every model (answered or cached)
    concurrency: int = 1
    # --dspy-target: (current, candidate, held-out rows) -> why the candidate lost on targets
    transfer_losses: Callable[[dspy.Module, dspy.Module, Sequence[Row]], list[str]] | None = None


def _demo_text(demo: Any) -> str:
    values = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    values.pop("augmented", None)
    return json.dumps(values, sort_keys=True, ensure_ascii=False, default=str)


def demo_changes(current: dspy.Module, candidate: dspy.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Demos the candidate adds and removes, over every predictor, as JSON text."""
    def demos(program: dspy.Module) -> list[str]:
        return [f"{name}: {_demo_text(d)}" for name, p in program.named_predictors() for d in p.demos]

    old, new = demos(current), demos(candidate)
    return tuple(d for d in new if d not in old), tuple(d for d in old if d not in new)


def changed_rows(before: Evaluation, after: Evaluation) -> tuple[ChangedRow, ...]:
    """Held-out rows scored differently by the candidate (same rows, same order), both answers."""
    return tuple(
        ChangedRow(old.source, old.inputs, old.expected, None if old.error else old.got,
                   None if new.error else new.got, old.score, new.score)
        for old, new in zip(before.examples, after.examples, strict=True) if old.score != new.score
    )


def _prepare(job: OptimizeJob) -> tuple[bool, list[Row], list[Row], dict[str, Any]]:
    """Load the current snapshot; split the rows; check the optimizer, its knobs and the train size."""
    from pytest_dspy_local.core.snapshot import load_into

    settings, spec = job.settings, job.spec
    check_dependencies(settings.optimizer)
    try:
        existed = load_into(spec.program, job.paths, job.baseline)
    except PromptError:
        existed = False  # a snapshot of another shape is what --optimize replaces
    rows = job.dataset.rows[: settings.max_examples] if settings.max_examples else job.dataset.rows
    train, heldout = split_rows(rows, settings.train_fraction, settings.seed)
    if settings.optimizer == "mipro" and len(train) < MIPRO_MIN_TRAIN:
        raise PromptError(
            f"{spec.path}: MIPROv2 needs at least {MIPRO_MIN_TRAIN} training examples, and {job.dataset.origin} "
            f"gives {len(train)} of {len(rows)} rows at train_fraction {settings.train_fraction}; "
            "add rows or use --dspy-optimizer=bootstrap"
        )
    knobs = dict(settings.optimizers.get(settings.optimizer, {}))
    route_knobs(settings.optimizer, knobs)  # bad knobs fail before any model call
    return existed, train, heldout, knobs


def _time_line(meter: Meter, before: Evaluation) -> str:
    """The projected wall time, from the held-out evaluation's seconds per real call (if any were real)."""
    if before.traffic.calls == 0:
        return "time: projected once the first calls are timed"
    meter.seconds_per_call = before.seconds / before.traffic.calls
    seconds = meter.projection.optimizer_calls * meter.seconds_per_call
    return f"about {seconds / 60:.1f} min at {meter.seconds_per_call:.2f}s per call (cached answers are faster)"


def optimize_prompt(job: OptimizeJob, models: OptimizerModels, write: Callable[[str], None]) -> OptimizationOutcome:
    """Optimize ``job.spec.program`` in place (when the candidate passes the paired test) and say what happened."""
    settings, spec = job.settings, job.spec
    started = time.monotonic()
    existed, train, heldout, knobs = _prepare(job)
    predictors = len(list(spec.program.named_predictors())) or 1
    run_knobs, train_rows = budgeted_knobs(settings.optimizer, knobs, settings.optimize_budget, predictors, len(train))
    projection = project(settings.optimizer, run_knobs, predictors, train_rows, len(heldout))
    budget = "" if settings.optimize_budget is None else str(settings.optimize_budget)
    write(projection.line + (f"; budget {budget}" if budget else ""))
    first = models.requests()
    before_eval = models.evaluate(spec.program, heldout)
    before = before_eval.score
    meter = Meter(models.requests, projection, settings.optimize_budget)
    write(f"{settings.optimizer} on {train_rows} train examples; held-out score before: {before:.3f}; "
          f"{_time_line(meter, before_eval)}")
    base = OptimizationOutcome(
        settings.optimizer, knobs, settings.seed, train_rows, len(heldout), before, before, not existed, job.force,
        existed, {k: job.dataset.rows[0].values[k] for k in spec.inputs}, alpha=settings.optimize_alpha,
        min_gain=settings.optimize_min_gain, projected=projection.total, budget=budget)
    problem = power_problem([e.score for e in before_eval.examples], alpha=settings.optimize_alpha,
                            min_gain=settings.optimize_min_gain, train_fraction=settings.train_fraction)
    if problem is not None and not job.force:
        outcome = dataclasses.replace(base, skipped=problem, calls=models.requests() - first,
                                      seconds=time.monotonic() - started)
        write(outcome.summary)
        return outcome
    if problem is not None:
        write(f"warning: {problem}; optimizing anyway (--optimize=force)")
    run = OptimizerRun(settings.optimizer, run_knobs, models.task_lm, models.prompt_lm, settings.seed,
                       models.concurrency, meter)
    with progress(write, meter):
        candidate = run_optimizer(run, spec.program, spec.metric, _examples(train[:train_rows], spec.inputs))
    without_metadata(candidate)
    if meter.reached or train_rows < len(train):
        write(f"budget reached ({budget}) after {meter.used} model calls: testing the best candidate so far")
    after_eval = models.evaluate(candidate, heldout)
    decision = decide([e.score for e in before_eval.examples], [e.score for e in after_eval.examples],
                      alpha=settings.optimize_alpha, min_gain=settings.optimize_min_gain, seed=settings.seed)
    losses: list[str] = []
    if (decision.significant or job.force) and after_eval.score > before and models.transfer_losses is not None:
        losses = models.transfer_losses(spec.program, candidate, heldout)
        for line in losses:
            write(f"TRANSFER LOSS: {line}")
    held_back = bool(losses) and settings.require_transfer and not job.force
    keep = job.force or (decision.significant and not held_back)
    added, removed = demo_changes(spec.program, candidate)
    if keep:
        spec.program = candidate
    outcome = dataclasses.replace(
        base, after=after_eval.score, replace=keep or not existed, transfer_losses=tuple(losses),
        held_back=held_back, test=decision.test, p_value=round(decision.p_value, 6),
        ci=(round(decision.ci[0], 6), round(decision.ci[1], 6)), significant=decision.significant,
        rows_needed=decision.rows_needed, kept=keep, changes=changed_rows(before_eval, after_eval),
        demos_added=added, demos_removed=removed, calls=models.requests() - first,
        budget_reached=meter.reached or train_rows < len(train), seconds=time.monotonic() - started)
    write(outcome.summary)
    return outcome


def without_metadata(program: dspy.Module) -> None:
    """Drop data keys that are no signature field (row metadata such as ``category``) from every demo."""
    for _, predictor in program.named_predictors():
        fields = {*predictor.signature.input_fields, *predictor.signature.output_fields, "augmented"}
        predictor.demos = [_only(demo, fields) for demo in predictor.demos]


def _only(demo: Any, fields: set[str]) -> Any:
    extra = [k for k in (demo.keys() if hasattr(demo, "keys") else ()) if k not in fields]
    if not extra:
        return demo
    return demo.without(*extra) if hasattr(demo, "without") else {k: v for k, v in demo.items() if k in fields}
