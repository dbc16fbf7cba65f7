"""The typed results every reporter consumes: frozen dataclasses, dicts only at the edges.

``to_json`` / ``from_json`` are the edges: the JSON report (schema
``pytest-dspy-local/report`` version 1) and the xdist hand-over, where a prompt's result
travels on its test report. Everything between reads attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

SCHEMA = "pytest-dspy-local/report"
VERSION = 1
CONFIDENCE = 0.95  # of the paired difference's interval (see core/gating.py)
DIGEST_SHOWN = 19  # "sha256:" and 12 hex digits

JsonDict = dict[str, Any]


def short_digest(digest: str) -> str:
    """``sha256:0123456789ab``: enough of a weights digest to tell models apart."""
    return digest[:DIGEST_SHOWN]


@dataclass(frozen=True)
class Traffic:
    """Model traffic: calls that reached the backend, answers from the cache, tokens."""

    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class ModelIdentity:
    """Which model answered: backend, name, weights digest and endpoint."""

    backend: str
    model: str
    digest: str
    endpoint: str

    @property
    def short_digest(self) -> str:
        """The digest cut for display."""
        return short_digest(self.digest)

    def to_json(self) -> dict[str, str]:
        """JSON form (every value a string)."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ModelIdentity | None:
        """Inverse of ``to_json``; None for an empty mapping."""
        if not value:
            return None
        return cls(*(str(value.get(k, "")) for k in ("backend", "model", "digest", "endpoint")))


@dataclass(frozen=True)
class ExampleResult:
    """One example: what went in, what was expected, what came back, its score."""

    source: str
    inputs: Mapping[str, Any]
    expected: Mapping[str, Any]
    got: Mapping[str, Any] | None
    score: float
    error: str | None = None
    id: str = ""
    baseline_score: float | None = None
    flip: str | None = None  # "to_wrong" or "to_right" against the baseline

    def to_json(self) -> JsonDict:
        """JSON form."""
        value = asdict(self)
        value["inputs"], value["expected"] = dict(self.inputs), dict(self.expected)
        value["got"] = None if self.got is None else dict(self.got)
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ExampleResult:
        """Inverse of ``to_json``."""
        return cls(**value)


@dataclass(frozen=True)
class Comparison:
    """A prompt's run compared with its baseline (values rounded to 6 places, as stored)."""

    baseline_score: float
    score: float
    n_paired: int
    delta: float
    ci: tuple[float, float]
    p_value: float
    test: str
    to_wrong: tuple[str, ...] = ()
    to_right: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    regressed: bool = False

    def to_json(self) -> JsonDict:
        """JSON form (the report's ``baseline`` entry)."""
        return {
            "baseline_score": self.baseline_score, "score": self.score, "n_paired": self.n_paired,
            "delta": self.delta, "ci": list(self.ci), "p_value": self.p_value, "test": self.test,
            "flipped_to_wrong": list(self.to_wrong), "flipped_to_right": list(self.to_right),
            "added": list(self.added), "removed": list(self.removed), "regressed": self.regressed,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Comparison | None:
        """Inverse of ``to_json``."""
        if value is None:
            return None
        v = value
        return cls(v["baseline_score"], v["score"], v["n_paired"], v["delta"], (v["ci"][0], v["ci"][1]),
                   v["p_value"], v["test"], tuple(v["flipped_to_wrong"]), tuple(v["flipped_to_right"]),
                   tuple(v["added"]), tuple(v["removed"]), bool(v["regressed"]))


@dataclass(frozen=True)
class HistoryPoint:
    """One recorded baseline: what made it, its score, size and model."""

    label: str
    score: float
    n: int
    model: str

    def to_json(self) -> JsonDict:
        """JSON form (as stored in the baseline file)."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> HistoryPoint:
        """Inverse of ``to_json``."""
        return cls(str(value["label"]), float(value["score"]), int(value["n"]), str(value["model"]))


@dataclass(frozen=True)
class PromptTexts:
    """The prompt as the model sees it now, and as stored with the snapshot (for diffs)."""

    current: str | None
    baseline: str | None


class ExampleTotals:
    """``n``, ``score`` and ``parse_failures`` of a result that holds per-example results."""

    examples: tuple[ExampleResult, ...]

    @property
    def n(self) -> int:
        """Examples evaluated."""
        return len(self.examples)

    @property
    def score(self) -> float:
        """Mean metric over all examples (a parse failure scores 0)."""
        return mean_score(self.examples)

    @property
    def parse_failures(self) -> int:
        """Examples whose model output did not parse into the output fields."""
        return sum(1 for e in self.examples if e.error is not None)


@dataclass(frozen=True)
class Evaluation(ExampleTotals):
    """A program's evaluation on some rows: per-example results (pooled over repeats)."""

    examples: tuple[ExampleResult, ...]
    seconds: float = 0.0
    repeats: int = 1
    traffic: Traffic = field(default_factory=Traffic)


def mean_score(examples: Sequence[ExampleResult]) -> float:
    """Mean of the examples' scores (0 for none)."""
    return sum(e.score for e in examples) / len(examples) if examples else 0.0


@dataclass(frozen=True)
class ChangedRow:
    """A held-out row the candidate scores differently on than the current program: both answers."""

    source: str
    inputs: Mapping[str, Any]
    expected: Mapping[str, Any]
    old: Mapping[str, Any] | None  # None: the answer did not parse
    new: Mapping[str, Any] | None
    old_score: float
    new_score: float

    @property
    def won(self) -> bool:
        """Does the candidate score higher here?"""
        return self.new_score > self.old_score

    def to_json(self) -> JsonDict:
        """JSON form."""
        old, new = (None if a is None else dict(a) for a in (self.old, self.new))
        return {"source": self.source, "inputs": dict(self.inputs), "expected": dict(self.expected),
                "old": old, "new": new, "old_score": self.old_score, "new_score": self.new_score}

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> ChangedRow:
        """Inverse of ``to_json``."""
        return cls(v["source"], v["inputs"], v["expected"], v["old"], v["new"], float(v["old_score"]),
                   float(v["new_score"]))


@dataclass(frozen=True)
class OptimizationOutcome:
    """The result of optimizing one prompt: scores before and after, the paired test, and the decision."""

    optimizer: str
    knobs: Mapping[str, Any]
    seed: int
    train: int
    heldout: int
    before: float
    after: float
    replace: bool  # the snapshot is (re)written: the candidate was kept, or there was no snapshot
    forced: bool
    snapshot_existed: bool
    render_inputs: Mapping[str, Any]
    # Targets the winning candidate lost on (core/transfer.loss_message), and whether
    # require_transfer therefore kept the current program.
    transfer_losses: tuple[str, ...] = ()
    held_back: bool = False
    # The one-sided paired test of candidate vs current on the held-out rows (core/acceptance.py).
    test: str = ""
    p_value: float = 1.0
    ci: tuple[float, float] = (0.0, 0.0)
    alpha: float = 0.05
    min_gain: float = 0.0
    significant: bool = False
    rows_needed: int | None = None
    kept: bool = False  # the candidate replaced the current program
    changes: tuple[ChangedRow, ...] = ()  # held-out rows won or lost
    demos_added: tuple[str, ...] = ()
    demos_removed: tuple[str, ...] = ()
    skipped: str = ""  # why the optimizer did not run (no gain could be significant)
    projected: int = 0  # projected model calls (core/projection.py)
    calls: int = 0  # model requests the optimization made (answered by a model or the cache)
    budget: str = ""
    budget_reached: bool = False
    seconds: float = 0.0

    @property
    def gain(self) -> float:
        """Held-out score after minus before."""
        return self.after - self.before

    @property
    def improved(self) -> bool:
        """Did the candidate score higher on the held-out part?"""
        return self.after > self.before

    @property
    def won(self) -> tuple[ChangedRow, ...]:
        """Held-out rows the candidate wins."""
        return tuple(c for c in self.changes if c.won)

    @property
    def lost(self) -> tuple[ChangedRow, ...]:
        """Held-out rows the candidate loses."""
        return tuple(c for c in self.changes if not c.won)

    def _kept_current(self) -> str:
        return "kept the current program" if self.snapshot_existed else "kept the program as written"

    @property
    def verdict(self) -> str:
        """What was decided, in words."""
        if self.skipped:
            return f"{self.skipped}; {self._kept_current()} (add rows, or use --optimize=force)"
        if self.forced:
            return "replaced the snapshot (--optimize=force)"
        if self.held_back:
            return "improved on the task model but lost on a target: kept the current program (require_transfer)"
        if self.significant and self.transfer_losses:
            return "improved: snapshot updated, although it lost on a target"
        if self.significant:
            return "improved: snapshot updated"
        if not self.improved:
            if self.snapshot_existed:
                return "no improvement: kept the current snapshot"
            return "no improvement: kept the program as written and recorded it as the baseline"
        if self.p_value < self.alpha:
            return f"gain not above optimize_min_gain {self.min_gain}, {self._kept_current()}"
        need = ("" if self.rows_needed is None
                else f"need about {self.rows_needed} held-out rows to detect {self.gain:+.2f}; ")
        return f"not significant, {self._kept_current()} ({need}add rows or use --optimize=force)"

    @property
    def test_text(self) -> str:
        """``(+0.083, 95% CI [-0.08, +0.25]) on 12 rows, p=0.5 by McNemar exact (one-sided)``."""
        low, high = self.ci
        return (f"({self.gain:+.3f}, {CONFIDENCE:.0%} CI [{low:+.2f}, {high:+.2f}]) on {self.heldout} rows, "
                f"p={self.p_value:.3g} by {self.test}")

    @property
    def summary(self) -> str:
        """One line: optimizer, split, held-out scores, the paired test, decision."""
        split = f"{self.optimizer}, {self.train} train / {self.heldout} held-out examples"
        if self.budget_reached:
            split += f"; budget reached: {self.budget}"
        if self.skipped:
            return f"not optimized ({split}): held-out {self.before:.3f}; {self.verdict}"
        return f"optimized ({split}): held-out {self.before:.3f} -> {self.after:.3f} {self.test_text}: {self.verdict}"

    def to_json(self) -> JsonDict:
        """JSON form (the report's ``optimization`` entry)."""
        skip = ("changes", "knobs", "render_inputs")
        value = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
        value.update(knobs=dict(self.knobs), render_inputs=dict(self.render_inputs), ci=list(self.ci),
                     transfer_losses=list(self.transfer_losses), demos_added=list(self.demos_added),
                     demos_removed=list(self.demos_removed), changes=[c.to_json() for c in self.changes],
                     gain=round(self.gain, 6), summary=self.summary)
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> OptimizationOutcome | None:
        """Inverse of ``to_json``."""
        if value is None:
            return None
        fields = {k: value[k] for k in cls.__dataclass_fields__ if k in value}
        listed = ("transfer_losses", "demos_added", "demos_removed")
        fields.update({k: tuple(value.get(k, ())) for k in listed})
        fields.update(ci=tuple(value.get("ci", (0.0, 0.0))),
                      changes=tuple(ChangedRow.from_json(c) for c in value.get("changes", ())))
        return cls(**fields)


# A transfer check's verdicts (core/transfer.py decides which).
CARRIES_OVER = "carries over"
LOST = "lost on target"
INCONCLUSIVE = "inconclusive"
NOTHING_TO_CHECK = "nothing to compare"  # the snapshot is the program as written, or there is none


@dataclass(frozen=True)
class Transfer:
    """One prompt on one target model: as written vs optimized, on the task model and on the target.

    ``p_gain`` and ``p_loss`` are the one-sided paired tests (gating's) of optimized vs as
    written on the target; ``ci`` is the 95% interval of the target's gain.
    """

    target: str
    model: ModelIdentity | None
    rows: int
    heldout: bool  # scored on the optimizer's held-out split (else on every evaluation row)
    task_written: float
    task_optimized: float
    target_written: float
    target_optimized: float
    target_parse_failures: int
    p_gain: float
    p_loss: float
    ci: tuple[float, float]
    test: str
    verdict: str

    @property
    def task_gain(self) -> float:
        """The optimized prompt's gain on the task model (the one it was optimized on)."""
        return self.task_optimized - self.task_written

    @property
    def target_gain(self) -> float:
        """Its gain on the target."""
        return self.target_optimized - self.target_written

    @property
    def lost(self) -> bool:
        """Did the optimized prompt score significantly lower than as written on the target?"""
        return self.verdict == LOST

    def to_json(self) -> JsonDict:
        """JSON form (an entry of the report's ``transfer`` list)."""
        return {
            "target": self.target, "model": {} if self.model is None else self.model.to_json(),
            "rows": self.rows, "heldout": self.heldout,
            "task": {"written": self.task_written, "optimized": self.task_optimized, "gain": round(self.task_gain, 6)},
            "on_target": {"written": self.target_written, "optimized": self.target_optimized,
                          "gain": round(self.target_gain, 6), "parse_failures": self.target_parse_failures},
            "p_gain": self.p_gain, "p_loss": self.p_loss, "ci": list(self.ci), "test": self.test,
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> Transfer:
        """Inverse of ``to_json``."""
        task, target = v["task"], v["on_target"]
        return cls(
            v["target"], ModelIdentity.from_json(v.get("model") or {}), int(v["rows"]), bool(v["heldout"]),
            float(task["written"]), float(task["optimized"]), float(target["written"]), float(target["optimized"]),
            int(target.get("parse_failures", 0)), float(v["p_gain"]), float(v["p_loss"]),
            (float(v["ci"][0]), float(v["ci"][1])), str(v["test"]), str(v["verdict"]),
        )


PASSED, FAILED, ERROR = "passed", "failed", "error"


@dataclass(frozen=True)
class PromptResult(ExampleTotals):
    """One prompt item's result: what every reporter reads."""

    nodeid: str
    name: str
    outcome: str  # PASSED, FAILED or ERROR (could not be evaluated)
    examples: tuple[ExampleResult, ...] = ()
    threshold: float | None = None
    seconds: float = 0.0
    calls: int = 0
    cached: int = 0
    repeats: int = 1
    model: ModelIdentity | None = None
    notes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    comparison: Comparison | None = None
    history: tuple[HistoryPoint, ...] = ()
    prompt: PromptTexts | None = None
    optimization: OptimizationOutcome | None = None  # --optimize: in the JSON report only then
    # Why `--optimize=stale` would optimize this prompt, as the item found its snapshot ("no snapshot",
    # "data changed: 1 row added"); empty when the snapshot is fresh. See core/provenance.py.
    stale: tuple[str, ...] = ()
    transfer: tuple[Transfer, ...] = ()  # --dspy-target: one per target model

    @classmethod
    def error(cls, nodeid: str, message: str) -> PromptResult:
        """An item that could not be evaluated (bad input, unreachable model)."""
        return cls(nodeid, nodeid.rsplit("::", 1)[-1], ERROR, reasons=(message,))

    @property
    def passed(self) -> bool:
        """Did the prompt pass?"""
        return self.outcome == PASSED

    def worst(self, count: int) -> list[ExampleResult]:
        """The lowest-scoring examples, parse failures first, in data order on ties."""
        ranked = sorted(enumerate(self.examples), key=lambda p: (p[1].score, p[1].error is None, p[0]))
        return [e for _, e in ranked[:count] if e.score < 1.0]

    def to_json(self) -> JsonDict:
        """The JSON report's entry for this prompt."""
        error = self.outcome == ERROR
        return {
            "nodeid": self.nodeid, "name": self.name, "outcome": self.outcome,
            "score": None if error else (round(self.score, 6) if self.n else 0.0),
            "threshold": self.threshold, "n": self.n, "repeats": self.repeats,
            "parse_failures": self.parse_failures, "seconds": round(self.seconds, 3),
            "model_calls": self.calls, "cached": self.cached,
            "reasons": list(self.reasons), "notes": list(self.notes),
            "baseline": None if self.comparison is None else self.comparison.to_json(),
            "examples": [e.to_json() for e in self.examples],
            "history": [h.to_json() for h in self.history],
            "prompt": {} if self.prompt is None else {"current": self.prompt.current, "baseline": self.prompt.baseline},
            "model": {} if self.model is None else self.model.to_json(),
            "stale": list(self.stale),
            # Added in place (schema version 1 stays readable): only when --dspy-target was given.
            **({"transfer": [t.to_json() for t in self.transfer]} if self.transfer else {}),
            # Likewise only under --optimize.
            **({"optimization": self.optimization.to_json()} if self.optimization is not None else {}),
        }

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> PromptResult:
        """Inverse of ``to_json`` (the xdist controller and report readers use it)."""
        prompt = v.get("prompt") or {}
        return cls(
            nodeid=v["nodeid"], name=v["name"], outcome=v["outcome"],
            examples=tuple(ExampleResult.from_json(e) for e in v.get("examples", [])),
            threshold=v.get("threshold"), seconds=float(v.get("seconds", 0.0)),
            calls=int(v.get("model_calls", 0)), cached=int(v.get("cached", 0)), repeats=int(v.get("repeats", 1)),
            model=ModelIdentity.from_json(v.get("model") or {}),
            notes=tuple(v.get("notes", [])), reasons=tuple(v.get("reasons", [])),
            comparison=Comparison.from_json(v.get("baseline")),
            history=tuple(HistoryPoint.from_json(h) for h in v.get("history", [])),
            prompt=PromptTexts(prompt.get("current"), prompt.get("baseline")) if prompt else None,
            stale=tuple(v.get("stale", [])),
            transfer=tuple(Transfer.from_json(t) for t in v.get("transfer", [])),
            optimization=OptimizationOutcome.from_json(v.get("optimization")),
        )


@dataclass(frozen=True)
class GateSettings:
    """The gating settings a run report records."""

    alpha: float
    min_delta: float
    repeats: int


@dataclass(frozen=True)
class RunReport:
    """Every prompt item of a run, sorted by node id, with the gating settings."""

    prompts: tuple[PromptResult, ...]
    settings: GateSettings

    @classmethod
    def of(cls, results: Sequence[PromptResult], settings: GateSettings) -> RunReport:
        """A report of ``results`` in node-id order."""
        return cls(tuple(sorted(results, key=lambda r: r.nodeid)), settings)

    @property
    def model(self) -> ModelIdentity | None:
        """The model of the first prompt that has one."""
        return next((p.model for p in self.prompts if p.model is not None), None)

    @property
    def passed(self) -> int:
        """Prompts that passed."""
        return sum(1 for p in self.prompts if p.passed)

    @property
    def calls(self) -> int:
        """Model calls over every prompt."""
        return sum(p.calls for p in self.prompts)

    @property
    def cached(self) -> int:
        """Cached answers over every prompt."""
        return sum(p.cached for p in self.prompts)

    def to_json(self) -> JsonDict:
        """The whole JSON report document (schema version 1)."""
        return {
            "schema": SCHEMA, "version": VERSION,
            "model": {} if self.model is None else self.model.to_json(),
            "settings": asdict(self.settings),
            "totals": {"prompts": len(self.prompts), "passed": self.passed, "failed": len(self.prompts) - self.passed,
                       "model_calls": self.calls, "cached": self.cached},
            "prompts": [p.to_json() for p in self.prompts],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RunReport:
        """Read a JSON report document back."""
        s = value["settings"]
        settings = GateSettings(float(s["alpha"]), float(s["min_delta"]), int(s["repeats"]))
        return cls(tuple(PromptResult.from_json(p) for p in value["prompts"]), settings)
