"""Whether ``--optimize`` keeps a candidate: a one-sided paired test of its held-out gain.

The candidate and the current program are scored on the same held-out rows; gating's
paired test (McNemar exact for 0/1 metrics, a seeded paired bootstrap otherwise) in the
gain direction decides. A candidate is kept when ``p < optimize_alpha`` and its gain exceeds
``optimize_min_gain``. Before the optimizer runs, ``power_problem`` says when no achievable
gain could pass that test on the held-out split, and how many rows would be needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from pytest_dspy_local.core.gating import GAIN, one_sided

POWER = 0.8  # of the "rows needed" estimate: the chance to detect the gain seen, were it real


def min_discordant(alpha: float) -> int:
    """The fewest rows that must improve (none getting worse) for McNemar's one-sided p to fall below alpha."""
    rows = 1
    while 0.5**rows >= alpha:  # the p-value of `rows` improvements and no loss
        rows += 1
    return rows


def _binary(scores: Sequence[float]) -> bool:
    return all(s in (0.0, 1.0) for s in scores)


@dataclass(frozen=True)
class Acceptance:
    """The paired test of candidate vs current on the held-out rows, and what it decides."""

    test: str
    p_value: float
    gain: float
    ci: tuple[float, float]
    rows: int
    won: int  # rows the candidate scores higher on
    lost: int
    alpha: float
    min_gain: float
    rows_needed: int | None  # held-out rows to detect this gain at POWER (None: no gain to detect)

    @property
    def significant(self) -> bool:
        """Does the gain pass the test and exceed the minimum gain?"""
        return self.p_value < self.alpha and self.gain > self.min_gain


def rows_needed(diffs: Sequence[float], alpha: float) -> int | None:
    """About how many held-out rows a paired test at ``alpha`` needs to detect the mean of ``diffs`` at POWER.

    The normal approximation n = (z_alpha + z_power)^2 * var / gain^2, with the variance of the
    per-row differences seen; never fewer than McNemar's minimum over the share of rows that changed.
    """
    gain = sum(diffs) / len(diffs)
    if gain <= 0:
        return None
    variance = sum((d - gain) ** 2 for d in diffs) / len(diffs)
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(POWER)
    changed = sum(1 for d in diffs if d != 0) / len(diffs)
    return max(math.ceil(z * z * variance / (gain * gain)), math.ceil(min_discordant(alpha) / changed))


def decide(old: Sequence[float], new: Sequence[float], *, alpha: float, min_gain: float, seed: int) -> Acceptance:
    """Test the candidate's per-row held-out scores ``new`` against the current program's ``old``."""
    t = one_sided(new, old, seed=seed, direction=GAIN)
    diffs = [a - b for a, b in zip(new, old, strict=True)]
    return Acceptance(t.test, t.p_value, t.delta, t.ci, len(diffs), t.better, t.worse, alpha, min_gain,
                      rows_needed(diffs, alpha))


def power_problem(before: Sequence[float], *, alpha: float, min_gain: float, train_fraction: float) -> str | None:
    """Why no candidate could pass the acceptance test on these held-out rows (None when one could).

    ``before`` is the current program's per-row held-out scores. For a 0/1 metric at most the rows
    it gets wrong can improve, and McNemar needs ``min_discordant(alpha)`` of them.
    """
    rows = len(before)
    below = [s for s in before if s < 1.0]
    if not below:
        return f"every one of the {rows} held-out rows already scores full marks: there is nothing to gain"
    ceiling = sum(1.0 - s for s in below) / rows
    if ceiling <= min_gain:
        return (f"the most any candidate could gain on the {rows} held-out rows is {ceiling:+.3f}, "
                f"not above optimize_min_gain {min_gain}")
    need = min_discordant(alpha)
    if not _binary(before) or len(below) >= need:
        return None
    heldout = math.ceil(need * rows / len(below))
    data = math.ceil(heldout / (1.0 - train_fraction))
    return (f"held-out split too small for a significant gain: {rows} held-out rows, {len(below)} of them wrong now, "
            f"and McNemar exact at optimize_alpha {alpha} needs at least {need} rows to improve (with none lost); "
            f"at this error rate that takes about {heldout} held-out rows, {data} rows of data at train_fraction "
            f"{train_fraction}")
