"""Regression gating: this run's per-example results against the stored baseline.

Examples are paired by id (a hash of their inputs; a repeated row's id carries its number,
``id#2``). For pass/fail metrics the test is McNemar's exact test, one-sided (it gates on
drops): among the examples that changed, is "right -> wrong" more frequent than chance?
That is an exact binomial test on the discordant pairs. For continuous metrics it is a
seeded paired bootstrap of the mean difference. Either way the difference's confidence
interval is a seeded bootstrap.
SciPy is imported only when a baseline is compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_dspy_local.core.evaluation import occurrences
from pytest_dspy_local.core.results import CONFIDENCE, Comparison, ExampleResult

BOOTSTRAP_RESAMPLES = 2000


def _is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def _bootstrap_ci(diffs: Sequence[float], seed: int) -> tuple[tuple[float, float], Any]:
    import numpy as np
    from scipy import stats

    data = np.asarray(diffs, dtype=float)
    if np.all(data == data[0]):  # no spread: the interval is the point
        return (float(data[0]), float(data[0])), np.full(BOOTSTRAP_RESAMPLES, data[0])
    result = stats.bootstrap((data,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", random_state=np.random.default_rng(seed))
    interval = result.confidence_interval
    return (float(interval.low), float(interval.high)), result.bootstrap_distribution


def _mcnemar(to_wrong: int, to_right: int) -> float:
    from scipy import stats

    if to_wrong + to_right == 0:
        return 1.0
    return float(stats.binomtest(to_wrong, to_wrong + to_right, 0.5, alternative="greater").pvalue)


LOSS, GAIN = "loss", "gain"  # the direction a one-sided paired test looks in


@dataclass(frozen=True)
class PairedTest:
    """One-sided paired test of ``new`` against ``old`` on the same rows (unrounded)."""

    test: str
    p_value: float
    delta: float  # mean of new - old
    ci: tuple[float, float]  # its bootstrap interval
    worse: int  # rows where new < old
    better: int  # rows where new > old


def one_sided(new: Sequence[float], old: Sequence[float], *, seed: int, direction: str) -> PairedTest:
    """Is ``new`` lower (``LOSS``) or higher (``GAIN``) than ``old`` on the same rows? McNemar or bootstrap."""
    diffs = [a - b for a, b in zip(new, old, strict=True)]
    delta = sum(diffs) / len(diffs)
    ci, distribution = _bootstrap_ci(diffs, seed)
    worse, better = sum(1 for d in diffs if d < 0), sum(1 for d in diffs if d > 0)
    if _is_binary(new) and _is_binary(old):
        counts = (worse, better) if direction == LOSS else (better, worse)
        return PairedTest("McNemar exact (one-sided)", _mcnemar(*counts), delta, ci, worse, better)
    # One-sided bootstrap p-value: the share of resampled means on the other side of zero
    # (percentile-interval inversion); 1 when the observed mean points the other way.
    if direction == LOSS:
        p_value = float((distribution >= 0).mean()) if delta < 0 else 1.0
    else:
        p_value = float((distribution <= 0).mean()) if delta > 0 else 1.0
    return PairedTest("paired bootstrap (one-sided)", p_value, delta, ci, worse, better)


def compare(
    current: Mapping[str, tuple[str, float]],
    baseline: Mapping[str, tuple[str, float]],
    *,
    alpha: float,
    min_delta: float,
    seed: int = 0,
) -> Comparison | None:
    """Compare ``{id: (source, score)}`` maps; None when no example pairs up."""
    paired = [k for k in current if k in baseline]
    if not paired:
        return None
    new = [current[k][1] for k in paired]
    old = [baseline[k][1] for k in paired]
    t = one_sided(new, old, seed=seed, direction=LOSS)
    to_wrong = [current[k][0] for k, a, b in zip(paired, new, old, strict=True) if a < b]
    to_right = [current[k][0] for k, a, b in zip(paired, new, old, strict=True) if a > b]
    return Comparison(
        baseline_score=round(sum(old) / len(old), 6), score=round(sum(new) / len(new), 6), n_paired=len(paired),
        delta=round(t.delta, 6), ci=(round(t.ci[0], 6), round(t.ci[1], 6)), p_value=round(t.p_value, 6),
        test=t.test, to_wrong=tuple(to_wrong), to_right=tuple(to_right),
        added=tuple(sorted(current[k][0] for k in current if k not in baseline)),
        removed=tuple(sorted(baseline[k][0] for k in baseline if k not in current)),
        regressed=t.p_value < alpha and -t.delta > min_delta,
    )


def regression_reasons(comparison: Comparison, alpha: float, min_delta: float) -> list[str]:
    """Why a comparison is a regression (empty when it is not)."""
    c = comparison
    if not c.regressed:
        return []
    return [f"score dropped from baseline {c.baseline_score:.3f} to {c.score:.3f} "
            f"(delta {c.delta:+.3f}, {CONFIDENCE:.0%} CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}], "
            f"p={c.p_value:.4f} < alpha {alpha} by {c.test}, drop > min_delta {min_delta})"]


@dataclass(frozen=True)
class Gate:
    """A run gated against its baseline: examples marked with flips, the comparison, notes, reasons."""

    examples: tuple[ExampleResult, ...]
    comparison: Comparison | None = None
    notes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


def _mark(example: ExampleResult, stored: Mapping[str, tuple[str, float]]) -> ExampleResult:
    if example.id not in stored:
        return example
    old = stored[example.id][1]
    flip = None if example.score == old else ("to_wrong" if example.score < old else "to_right")
    return replace(example, baseline_score=old, flip=flip)


def against_baseline(examples: Sequence[ExampleResult], baseline: Mapping[str, Any] | None, *, alpha: float,
                     min_delta: float, seed: int) -> Gate:
    """Compare per-example results with a stored baseline document; mark flips; say why it fails."""
    if baseline is None:
        return Gate(tuple(examples), notes=("no baseline: gated on the threshold only "
                                            "(record one with --dspy-update-baseline)",))
    recorded = baseline.get("examples", [])
    # Numbered as this run numbers repeated rows, so a baseline written before repeats were told apart pairs too.
    ids = occurrences([str(e["id"]) for e in recorded])
    stored = {key: (str(e["source"]), float(e["score"])) for key, e in zip(ids, recorded, strict=True)}
    marked = tuple(_mark(e, stored) for e in examples)
    current = {e.id: (e.source, e.score) for e in marked}
    comparison = compare(current, stored, alpha=alpha, min_delta=min_delta, seed=seed)
    if comparison is None:
        return Gate(marked, notes=("the baseline shares no example with this run: gated on the threshold only",))
    notes: tuple[str, ...] = ()
    if comparison.added or comparison.removed:
        notes = (f"since the baseline: {len(comparison.added)} example(s) added, "
                 f"{len(comparison.removed)} removed (not paired)",)
    return Gate(marked, comparison, notes, tuple(regression_reasons(comparison, alpha, min_delta)))
