"""The Markdown summary for pull requests (appended to ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_dspy_local.core.results import CONFIDENCE, PromptResult, RunReport
from pytest_dspy_local.report.terminal import FLIPS_SHOWN, TRANSFER_COLUMNS, transfer_cells


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _row(result: PromptResult) -> str:
    c = result.comparison
    delta = _number(None if c is None else c.delta, signed=True)
    if c is not None and c.ci:
        delta += f" [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]"
    p_value = f"{c.p_value:.4f}" if c is not None else "-"
    mark = {"passed": "✅ passed", "failed": "❌ failed"}.get(result.outcome, "⚠️ error")
    score = None if result.outcome == "error" else (round(result.score, 6) if result.n else 0.0)
    return (f"| `{result.name}` | {mark} | {_number(score)} | {_number(result.threshold)} | "
            f"{_number(None if c is None else c.baseline_score)} | {delta} | {p_value} | {result.n} |")


def _details(result: PromptResult) -> list[str]:
    lines = [f"**`{result.name}`** ({result.nodeid})", ""]
    lines += [f"- {reason}" for reason in result.reasons]
    flipped = result.comparison.to_wrong if result.comparison is not None else ()
    if flipped:
        shown = ", ".join(f"`{s}`" for s in flipped[:FLIPS_SHOWN])
        more = f" and {len(flipped) - FLIPS_SHOWN} more" if len(flipped) > FLIPS_SHOWN else ""
        lines.append(f"- flipped from right to wrong: {shown}{more}")
    return [*lines, ""]


def _transfer(report: RunReport) -> list[str]:
    rows = [transfer_cells(r, t) for r in report.prompts for t in r.transfer]
    if not rows:
        return []
    return ["", "### Transfer to target models", "",
            "Score as written → optimized; p: one-sided paired test on the target.", "",
            "| " + " | ".join(TRANSFER_COLUMNS) + " |", "|" + " --- |" * len(TRANSFER_COLUMNS),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _cell(values: Mapping[str, Any] | None) -> str:
    if values is None:
        return "*(did not parse)*"
    return ", ".join(f"{k}={v!r}" for k, v in values.items()).replace("|", "\\|").replace("\n", " ")


def _optimization(report: RunReport) -> list[str]:
    """``--optimize``: per prompt the paired test and decision, then the held-out rows won and lost."""
    optimized = [r for r in report.prompts if r.optimization is not None]
    if not optimized:
        return []
    lines = ["", "### Optimization", "", "| prompt | held-out | gain (95% CI) | rows | p | test | decision |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in optimized:
        o = r.optimization
        assert o is not None
        lines.append(f"| `{r.name}` | {o.before:.3f} → {o.after:.3f} | {o.gain:+.3f} [{o.ci[0]:+.3f}, {o.ci[1]:+.3f}] "
                     f"| {o.heldout} | {o.p_value:.4g} | {o.test or '-'} | {o.verdict} |")
    for r in optimized:
        o = r.optimization
        assert o is not None
        if not o.changes:
            continue
        lines += ["", f"**`{r.name}`**: held-out rows the new program wins ({len(o.won)}) and loses ({len(o.lost)})",
                  "", "| row | won/lost | input | expected | old answer | new answer |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {c.source} | {'won' if c.won else 'lost'} | {_cell(c.inputs)} | {_cell(c.expected)} | "
                  f"{_cell(c.old)} | {_cell(c.new)} |" for c in o.changes]
        lines += [f"- demo added: `{d}`" for d in o.demos_added] + [f"- demo removed: `{d}`" for d in o.demos_removed]
    return lines


def _headline(report: RunReport) -> str:
    model = report.model
    name, backend, digest = ("?", "?", "") if model is None else (model.model, model.backend, model.short_digest)
    return (f"{report.passed} of {len(report.prompts)} prompts passed on `{name}` ({backend}, `{digest}`); "
            f"{report.calls} model calls, {report.cached} cached.")


def markdown(report: RunReport) -> str:
    """A pull-request comment: one table row per prompt, then why each failure failed."""
    lines = ["## Prompt evaluation (pytest-dspy-local)", "", _headline(report), "",
             f"| prompt | result | score | threshold | baseline | Δ ({CONFIDENCE:.0%} CI) | p | n |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_row(result) for result in report.prompts]
    lines += _transfer(report)
    lines += _optimization(report)
    failures = [result for result in report.prompts if not result.passed]
    if failures:
        lines += ["", "### Failures", ""]
        for result in failures:
            lines += _details(result)
    return "\n".join(lines).rstrip() + "\n"


def append_step_summary(path: Path, report: RunReport) -> None:
    """Append the Markdown summary to GitHub Actions' step summary file."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(markdown(report) + "\n")
