"""What pytest prints for prompt items: failure reports, verbose status words, the session summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_dspy_local.core.provenance import NO_SNAPSHOT
from pytest_dspy_local.core.results import (
    CONFIDENCE,
    Comparison,
    ExampleResult,
    ModelIdentity,
    PromptResult,
    Transfer,
)

WORST_SHOWN = 5
DETAIL_SHOWN = 20
FLIPS_SHOWN = 10  # also the Markdown summary's limit
VALUE_WIDTH = 160


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."


def _fields(values: Mapping[str, Any] | None) -> str:
    if not values:
        return "-"
    return ", ".join(f"{k}={_value(v)}" for k, v in values.items())


def _score_text(score: float, threshold: float | None, n: int, parse_failures: int) -> str:
    relation = "" if threshold is None else f" {'>=' if score >= threshold else '<'} {threshold:.3f}"
    return f"{score:.3f}{relation} on {n} examples ({parse_failures} parse failures)"


def score_line(result: PromptResult) -> str:
    """``0.850 >= 0.700 on 20 examples (0 parse failures)``."""
    return _score_text(result.score, result.threshold, result.n, result.parse_failures)


def _example_lines(example: ExampleResult) -> list[str]:
    got = f"unparseable output: {example.error}" if example.error else _fields(example.got)
    return [
        f"  {example.source}  score {example.score:.2f}",
        f"    inputs:   {_fields(example.inputs)}",
        f"    expected: {_fields(example.expected)}",
        f"    got:      {got}",
    ]


def failure_lines(result: PromptResult) -> list[str]:
    """The report shown for a failing prompt item."""
    lines = [f"prompt {result.name!r} failed: {'; '.join(result.reasons)}"]
    lines.append(f"score {score_line(result)}")
    if result.model is not None:
        lines.append(f"model: {result.model.model} {result.model.short_digest} ({result.model.backend})")
    lines += comparison_lines(result.comparison)
    worst = result.worst(WORST_SHOWN)
    if worst:
        lines.append(f"worst {len(worst)} of {result.n} examples:")
        for example in worst:
            lines += _example_lines(example)
    return lines


def detail_lines(result: PromptResult) -> list[str]:
    """The item's report section: score, comparison, notes, and the examples that missed."""
    lines = [f"score {score_line(result)}; {result.calls} model calls, {result.cached} cached"]
    lines += comparison_lines(result.comparison) + list(result.notes) + optimization_lines(result)
    missed = [e for e in result.examples if e.score < 1.0 or e.flip]
    lines.append(f"examples below a full score: {len(missed)} of {result.n}"
                 + (f" (first {DETAIL_SHOWN}; every example is in --dspy-json and --dspy-report)"
                    if len(missed) > DETAIL_SHOWN else ""))
    for example in missed[:DETAIL_SHOWN]:
        got = f"unparseable: {example.error}" if example.error else _fields(example.got)
        lines.append(f"  {example.score:.2f}  {example.source}  {_fields(example.inputs)} -> {got}")
    return lines


def optimization_lines(result: PromptResult) -> list[str]:
    """``--optimize``: every held-out row the candidate won or lost, old and new answers side by side."""
    o = result.optimization
    if o is None or not o.changes:
        return []
    lines = [f"held-out rows the candidate won ({len(o.won)}) and lost ({len(o.lost)}):"]
    for c in o.changes:
        mark = "won " if c.won else "lost"
        lines.append(f"  {mark}  {c.source}  {_fields(c.inputs)}  expected {_fields(c.expected)}: "
                     f"{_fields(c.old)} -> {_fields(c.new)}")
    lines += [f"  demo added: {d}" for d in o.demos_added] + [f"  demo removed: {d}" for d in o.demos_removed]
    return lines


def _sources(label: str, sources: Sequence[str]) -> list[str]:
    if not sources:
        return []
    more = f" (+{len(sources) - FLIPS_SHOWN} more)" if len(sources) > FLIPS_SHOWN else ""
    return [f"{label} ({len(sources)}): {', '.join(sources[:FLIPS_SHOWN])}{more}"]


def comparison_lines(comparison: Comparison | None) -> list[str]:
    """The regression test against the baseline, in words."""
    if comparison is None:
        return []
    c = comparison
    lines = [f"baseline {c.baseline_score:.3f} -> {c.score:.3f} on {c.n_paired} paired examples: "
             f"delta {c.delta:+.3f} ({CONFIDENCE:.0%} CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]), p={c.p_value:.4f}, "
             f"{c.test}"]
    lines += _sources("flipped right -> wrong", c.to_wrong)
    lines += _sources("flipped wrong -> right", c.to_right)
    lines += _sources("added since the baseline (not paired)", c.added)
    lines += _sources("removed since the baseline", c.removed)
    return lines


def staleness_note(reasons: Sequence[str], optimize: str | None) -> str | None:
    """A prompt's note on its snapshot's staleness (``reasons`` from core.provenance.staleness), if any.

    ``--optimize=stale`` says for every prompt whether it was optimized and why; the other
    optimize modes name a stale snapshot's reasons; a plain run names stale snapshots only
    (a prompt never optimized is not news there).
    """
    why = "; ".join(reasons)
    if not reasons:
        return "fresh: not re-optimized" if optimize == "stale" else None
    if list(reasons) == [NO_SNAPSHOT]:
        return f"{NO_SNAPSHOT}: optimized" if optimize == "stale" else None
    if optimize is None:
        return f"snapshot stale ({why}); `pytest --optimize=stale` re-optimizes it"
    return f"stale ({why}): optimized"


def versions_note(changes: Sequence[str]) -> str | None:
    """Versions that changed since the snapshot was made (reported, never counted as stale)."""
    return f"snapshot made with other versions ({', '.join(changes)}); not counted as stale" if changes else None


def status_word(passed: bool, props: dict[str, Any]) -> str:
    """The ``-v`` status for a prompt item, e.g. ``PASSED (score 0.850 >= 0.700, n=20)``."""
    word = "PASSED" if passed else "FAILED"
    score, threshold, baseline = props.get("dspy_score"), props.get("dspy_threshold"), props.get("dspy_baseline")
    if score is None:
        return word
    if threshold is not None and score < threshold:
        return f"{word} (score {score:.3f} < {threshold:.3f}, n={props.get('dspy_n')})"
    if not passed and baseline is not None:
        p_value = props.get("dspy_p_value")
        return f"{word} (regression {baseline:.3f} -> {score:.3f}, p={p_value:.3g}, n={props.get('dspy_n')})"
    shown = "" if threshold is None else f" >= {threshold:.3f}"
    return f"{word} (score {score:.3f}{shown}, n={props.get('dspy_n')})"


def _summary_line(result: PromptResult) -> str:
    if result.outcome == "error":
        return f"{result.name}: ERROR {result.reasons[0] if result.reasons else ''}"
    scored = _score_text(round(result.score, 6) if result.n else 0.0, result.threshold, result.n,
                         result.parse_failures)
    c = result.comparison
    versus = "" if c is None else f", baseline {c.baseline_score:.3f} (p={c.p_value:.3g})"
    verdict = "ok" if result.passed else "FAILED"
    return f"{result.name}: {scored}{versus} {verdict} [{round(result.seconds, 3):.1f}s]"


def summary_lines(results: Sequence[PromptResult], calls: int, cached: int, items: int) -> list[str]:
    """Plain lines for the terminal summary: one per prompt (and its notes), then the model-call total."""
    lines = []
    for result in sorted(results, key=lambda r: r.nodeid):
        lines.append(_summary_line(result))
        lines += [f"  {note}" for note in result.notes]
        o = result.optimization
        if o is not None and o.changes:
            lines += [f"  held-out rows {label} ({len(rows)}): {', '.join(c.source for c in rows)}"
                      for label, rows in (("won", o.won), ("lost", o.lost)) if rows]
    lines += transfer_lines(results)
    lines.append(f"model calls: {calls + cached} ({calls} to the model, {cached} cached) in {items} item(s)")
    return lines


TRANSFER_COLUMNS = ("prompt", "target", "rows", "task model", "on target", "p(gain)", "p(loss)", "verdict")


def _pair(written: float, optimized: float) -> str:
    return f"{written:.3f} -> {optimized:.3f} ({optimized - written:+.3f})"


def transfer_cells(result: PromptResult, t: Transfer) -> tuple[str, ...]:
    """One row of the transfer table, as text cells (terminal and Markdown share them)."""
    rows = f"{t.rows} held-out" if t.heldout else f"{t.rows} all"
    return (result.name, t.target, rows, _pair(t.task_written, t.task_optimized),
            _pair(t.target_written, t.target_optimized), f"{t.p_gain:.3g}", f"{t.p_loss:.3g}", t.verdict)


def transfer_lines(results: Sequence[PromptResult]) -> list[str]:
    """The transfer table (``--dspy-target``): as written -> optimized, on the task model and each target."""
    rows = [transfer_cells(r, t) for r in sorted(results, key=lambda r: r.nodeid) for t in r.transfer]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in (TRANSFER_COLUMNS, *rows)) for i in range(len(TRANSFER_COLUMNS))]
    lines = ["transfer (score as written -> optimized; p: one-sided paired test on the target):"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in (TRANSFER_COLUMNS, *rows)]
    return lines


def model_line(model: ModelIdentity | str) -> str:
    """``dspy-local model: NAME sha256:... (embedded, in-process)``, or why it is unavailable."""
    if isinstance(model, str):
        return f"dspy-local model: unavailable: {model}"
    return f"dspy-local model: {model.model} {model.short_digest} ({model.backend}, {model.endpoint})"


def snapshot_lines(written: Sequence[Path], unused: Sequence[Path], deleted: Sequence[Path] = (),
                   strict: bool = False) -> list[str]:
    """Snapshot files written this run, deleted (unused), and unused ones left (their prompt module is gone)."""
    lines = [f"snapshot written: {p}" for p in written]
    lines += [f"snapshot deleted (its prompt module is gone): {p}" for p in deleted]
    if unused:
        fails = "; strict snapshots are on, so the run fails" if strict else ""
        lines.append(f"{len(unused)} snapshot file(s) unused (their prompt module is gone){fails}; delete them, "
                     "or run `pytest --dspy-update-baseline`, which does:")
        lines += [f"  {p}" for p in unused]
    return lines
