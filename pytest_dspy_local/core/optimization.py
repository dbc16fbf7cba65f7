"""``--optimize``: run a DSPy optimizer on local models and decide whether to keep the result.

The data is split (seeded) into a train part for the optimizer and a held-out
part for scoring; the candidate replaces the current program only when its
held-out score is higher (or with ``--optimize=force``). A tie keeps the
current program: with a weak proposal model "no improvement" is a normal outcome.
With ``--dspy-target``, a winning candidate is also scored on each target's held-out
rows (core/transfer.py); a significant loss there is reported loudly, and with
``require_transfer`` the candidate is not kept.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.data import Dataset, Row
from pytest_dspy_local.core.results import Evaluation, OptimizationOutcome
from pytest_dspy_local.core.settings import OPTIMIZERS, Settings, did_you_mean
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


@dataclass
class OptimizerRun:
    """What an optimizer needs besides the program and data."""

    name: str
    knobs: Mapping[str, Any]
    task_lm: dspy.LM
    prompt_lm: dspy.LM
    seed: int
    num_threads: int = 1  # task-model calls in flight while candidates are scored


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
_BEST = re.compile(r"Best[^:]*score[^:]*: ([0-9.]+)")
_ITERATION = re.compile(r"^Iteration (\d+):")
_STEP = re.compile(r"STEP (\d): ([A-Z ]+)")


class ProgressHandler(logging.Handler):
    """Turns DSPy's optimizer log lines into short progress lines."""

    def __init__(self, write: Callable[[str], None], calls: Callable[[], str]) -> None:
        super().__init__(logging.INFO)
        self._write, self._calls = write, calls
        self.best: float | None = None
        self.trial = ""

    def emit(self, record: logging.LogRecord) -> None:
        """Report steps, trials and the best score so far."""
        message = record.getMessage()
        if best := _BEST.search(message):
            self.best = float(best.group(1))
        elif step := _STEP.search(message):
            self._write(f"step {step.group(1)}: {step.group(2).strip().lower()} ({self._calls()})")
        elif (trial := _TRIAL.search(message)) and trial.group(0) != self.trial:
            self.trial = trial.group(0)
            self._write(f"trial {trial.group(1)}/{trial.group(2)}, best so far {self._best()} ({self._calls()})")
        elif (iteration := _ITERATION.search(message)) and iteration.group(0) != self.trial:
            self.trial = iteration.group(0)  # GEPA
            self._write(f"iteration {iteration.group(1)}, best so far {self._best()} ({self._calls()})")

    def _best(self) -> str:
        if self.best is None:
            return "-"
        # MIPROv2 logs percentages, GEPA fractions; show both as a mean metric in [0, 1].
        return f"{self.best / 100 if self.best > 1 else self.best:.3f}"


@contextmanager
def progress(write: Callable[[str], None], calls: Callable[[], str]) -> Iterator[ProgressHandler]:
    """Route DSPy's optimizer logs to ``write`` (and not to DSPy's own handlers) for the block."""
    logger = logging.getLogger("dspy.teleprompt")
    handler = ProgressHandler(write, calls)
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
    """The models an optimizer uses, an evaluator on the task model, and a call counter for progress."""

    task_lm: dspy.LM
    prompt_lm: dspy.LM
    evaluate: Evaluator
    calls_text: Callable[[], str]
    concurrency: int = 1
    # --dspy-target: (current, candidate, held-out rows) -> why the candidate lost on targets
    transfer_losses: Callable[[dspy.Module, dspy.Module, Sequence[Row]], list[str]] | None = None


def optimize_prompt(job: OptimizeJob, models: OptimizerModels, write: Callable[[str], None]) -> OptimizationOutcome:
    """Optimize ``job.spec.program`` in place (when the candidate wins) and say what happened."""
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
    before = models.evaluate(spec.program, heldout).score
    run = OptimizerRun(settings.optimizer, knobs, models.task_lm, models.prompt_lm, settings.seed, models.concurrency)
    write(f"{settings.optimizer} on {len(train)} train examples; held-out score before: {before:.3f}")
    with progress(write, models.calls_text):
        candidate = run_optimizer(run, spec.program, spec.metric, _examples(train, spec.inputs))
    without_metadata(candidate)
    after = models.evaluate(candidate, heldout).score
    losses: list[str] = []
    if after > before and models.transfer_losses is not None:
        losses = models.transfer_losses(spec.program, candidate, heldout)
        for line in losses:
            write(f"TRANSFER LOSS: {line}")
    held_back = bool(losses) and settings.require_transfer and not job.force
    keep = job.force or (after > before and not held_back)
    if keep:
        spec.program = candidate
    outcome = OptimizationOutcome(settings.optimizer, knobs, settings.seed, len(train), len(heldout), before, after,
                                  keep or not existed, job.force, existed,
                                  {k: job.dataset.rows[0].values[k] for k in spec.inputs}, tuple(losses), held_back)
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
