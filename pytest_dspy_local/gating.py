"""Regression gating: this run's per-example results against the stored baseline.

Examples are paired by id (a hash of their inputs). For pass/fail metrics the test is
McNemar's exact test, one-sided (it gates on drops): among the examples that changed,
is "right -> wrong" more frequent than chance? That is an exact binomial test on the
discordant pairs. For continuous metrics it is a seeded paired bootstrap of the mean
difference. Either way the difference's confidence interval is a seeded bootstrap.
SciPy is imported only when a baseline is compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass
class Comparison:
    """A prompt's run compared with its baseline."""

    baseline_score: float
    score: float
    n_paired: int
    delta: float
    ci: tuple[float, float]
    p_value: float
    test: str
    to_wrong: list[str] = field(default_factory=list)
    to_right: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    regressed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "baseline_score": round(self.baseline_score, 6), "score": round(self.score, 6),
            "n_paired": self.n_paired, "delta": round(self.delta, 6),
            "ci": [round(self.ci[0], 6), round(self.ci[1], 6)], "p_value": round(self.p_value, 6),
            "test": self.test, "flipped_to_wrong": self.to_wrong, "flipped_to_right": self.to_right,
            "added": self.added, "removed": self.removed, "regressed": self.regressed,
        }

    def reasons(self, alpha: float, min_delta: float) -> list[str]:
        """Why this is a regression (empty when it is not)."""
        if not self.regressed:
            return []
        return [f"score dropped from baseline {self.baseline_score:.3f} to {self.score:.3f} "
                f"(delta {self.delta:+.3f}, {CONFIDENCE:.0%} CI [{self.ci[0]:+.3f}, {self.ci[1]:+.3f}], "
                f"p={self.p_value:.4f} < alpha {alpha} by {self.test}, drop > min_delta {min_delta})"]


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
    diffs = [a - b for a, b in zip(new, old, strict=True)]
    delta = sum(diffs) / len(diffs)
    ci, distribution = _bootstrap_ci(diffs, seed)
    to_wrong = [current[k][0] for k, a, b in zip(paired, new, old, strict=True) if a < b]
    to_right = [current[k][0] for k, a, b in zip(paired, new, old, strict=True) if a > b]
    if _is_binary(new) and _is_binary(old):
        test, p_value = "McNemar exact (one-sided)", _mcnemar(len(to_wrong), len(to_right))
    else:
        # One-sided bootstrap p-value for "mean difference < 0": the share of resampled
        # means at or above zero (percentile-interval inversion).
        test, p_value = "paired bootstrap (one-sided)", float((distribution >= 0).mean()) if delta < 0 else 1.0
    return Comparison(
        baseline_score=sum(old) / len(old), score=sum(new) / len(new), n_paired=len(paired), delta=delta,
        ci=ci, p_value=p_value, test=test, to_wrong=to_wrong, to_right=to_right,
        added=sorted(current[k][0] for k in current if k not in baseline),
        removed=sorted(baseline[k][0] for k in baseline if k not in current),
        regressed=p_value < alpha and -delta > min_delta,
    )


def against_baseline(result: Any, baseline: Mapping[str, Any] | None, *, alpha: float, min_delta: float,
                     seed: int) -> list[str]:
    """Compare ``result`` (an EvalResult) with a stored baseline document; mark flips; return failure reasons."""
    if baseline is None:
        result.notes.append("no baseline: gated on the threshold only (record one with --dspy-update-baseline)")
        return []
    stored = {e["id"]: (str(e["source"]), float(e["score"])) for e in baseline.get("examples", [])}
    for example in result.examples:
        if example.id in stored:
            example.baseline_score = stored[example.id][1]
            if example.score != example.baseline_score:
                example.flip = "to_wrong" if example.score < example.baseline_score else "to_right"
    current = {e.id: (e.source, e.score) for e in result.examples}
    comparison = compare(current, stored, alpha=alpha, min_delta=min_delta, seed=seed)
    if comparison is None:
        result.notes.append("the baseline shares no example with this run: gated on the threshold only")
        return []
    result.comparison = comparison.as_dict()
    if comparison.added or comparison.removed:
        result.notes.append(f"since the baseline: {len(comparison.added)} example(s) added, "
                            f"{len(comparison.removed)} removed (not paired)")
    return comparison.reasons(alpha, min_delta)
