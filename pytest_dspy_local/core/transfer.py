"""The transfer check (``--dspy-target``): does an optimized prompt's gain carry over to another model?

Prompts are optimized on the task model, which is usually smaller than the model production
runs (a local 7B, or the embedded 135M in CI). A prompt tuned to one model's quirks can
help it and do nothing, or harm, on another: that is the fidelity gap of optimizing locally.
The check measures it: for each prompt and target model, the program as written and as
optimized are each scored on the task model and on the target, on the same rows, and the
target's pair is compared example by example with gating's paired test (McNemar's exact test
for pass/fail metrics, a seeded paired bootstrap otherwise), in both directions.

The rows are the optimizer's held-out split when the snapshot records an optimization (its
training rows would flatter the optimized prompt on both models), else every evaluation row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.data import Row
from pytest_dspy_local.core.gating import compare
from pytest_dspy_local.core.optimization import split_rows
from pytest_dspy_local.core.results import (
    CARRIES_OVER,
    INCONCLUSIVE,
    LOST,
    NOTHING_TO_CHECK,
    Evaluation,
    ModelIdentity,
    Transfer,
)
from pytest_dspy_local.core.settings import Settings
from pytest_dspy_local.errors import PromptError

if TYPE_CHECKING:
    import dspy

# (program, rows) -> its evaluation on one model
Scorer = Callable[["dspy.Module", Sequence[Row]], Evaluation]


@dataclass(frozen=True)
class TargetModel:
    """One target: its name, how to reach its identity, and a scorer on it."""

    name: str
    identity: Callable[[], ModelIdentity]
    score: Scorer


def transfer_rows(rows: Sequence[Row], baseline: Mapping[str, Any] | None, settings: Settings,
                  optimized_now: bool) -> tuple[Sequence[Row], bool]:
    """The rows to check on, and whether they are the optimizer's held-out split."""
    if optimized_now or (baseline is not None and baseline.get("optimization")):
        try:
            return split_rows(rows, settings.train_fraction, settings.seed)[1], True
        except PromptError:  # fewer than 2 rows: nothing was held out
            return rows, False
    return rows, False


def _scores(evaluation: Evaluation) -> dict[str, tuple[str, float]]:
    return {e.id: (e.source, e.score) for e in evaluation.examples}


def verdict(p_gain: float, p_loss: float, alpha: float, same_program: bool) -> str:
    """``carries over``, ``lost on target``, ``inconclusive`` or ``no snapshot``."""
    if same_program:
        return NOTHING_TO_CHECK
    if p_gain < alpha:
        return CARRIES_OVER
    if p_loss < alpha:
        return LOST
    return INCONCLUSIVE


def check(
    target: TargetModel,
    written: dspy.Module,
    optimized: dspy.Module,
    rows: Sequence[Row],
    *,
    heldout: bool,
    task: Scorer,
    same_program: bool,
    alpha: float,
    seed: int,
) -> Transfer:
    """Score both programs on the task model and on ``target``, and test the target's pair."""
    task_written, task_optimized = task(written, rows), task(optimized, rows)
    on_written, on_optimized = target.score(written, rows), target.score(optimized, rows)
    worse = compare(_scores(on_optimized), _scores(on_written), alpha=alpha, min_delta=0.0, seed=seed)
    better = compare(_scores(on_written), _scores(on_optimized), alpha=alpha, min_delta=0.0, seed=seed)
    p_loss = 1.0 if worse is None else worse.p_value
    p_gain = 1.0 if better is None else better.p_value
    ci = (0.0, 0.0) if worse is None else worse.ci
    return Transfer(
        target=target.name, model=target.identity(), rows=len(rows), heldout=heldout,
        task_written=round(task_written.score, 6), task_optimized=round(task_optimized.score, 6),
        target_written=round(on_written.score, 6), target_optimized=round(on_optimized.score, 6),
        target_parse_failures=on_optimized.parse_failures, p_gain=p_gain, p_loss=p_loss, ci=ci,
        test="" if worse is None else worse.test, verdict=verdict(p_gain, p_loss, alpha, same_program),
    )


def loss_message(prompt: str, t: Transfer) -> str:
    """The loud line for a candidate that wins on the task model and loses on a target."""
    return (f"{prompt}: the optimized prompt gains {t.task_gain:+.3f} on the task model but loses on target "
            f"{t.target!r}: {t.target_written:.3f} -> {t.target_optimized:.3f} ({t.rows} held-out rows, "
            f"p={t.p_loss:.4f} by {t.test})")


def provenance_entry(transfers: Sequence[Transfer]) -> dict[str, Any]:
    """What the baseline's provenance records of a transfer check, per target."""
    return {
        t.target: {"digest": "" if t.model is None else t.model.digest, "rows": t.rows,
                   "written": t.target_written, "optimized": t.target_optimized, "p_gain": t.p_gain,
                   "p_loss": t.p_loss, "verdict": t.verdict}
        for t in transfers
    }
