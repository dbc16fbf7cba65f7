"""A self-contained, offline HTML page of a run's report, for human reviewers of a CI run.

The page has no scripts and nothing a browser would fetch: CSS and SVG charts are inline, and
every value taken from the report is escaped, since prompts and example data are untrusted.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_dspy_local.core.results import (
    ERROR,
    FAILED,
    Comparison,
    ExampleResult,
    ModelIdentity,
    OptimizationOutcome,
    PromptResult,
    RunReport,
)

CSS = """
:root { --pass: #1a7f37; --fail: #cf222e; --muted: #57606a; --line: #d0d7de; --soft: #f6f8fa; }
* { box-sizing: border-box; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       margin: 0 auto; padding: 20px 28px 40px; max-width: 1180px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 0; }
h3 { font-size: 14px; margin: 18px 0 6px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; }
.meta { color: var(--muted); margin: 2px 0; } .meta b { color: #1f2328; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; } table.summary { width: auto; min-width: 62%; }
table.examples { table-layout: fixed; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #fff; background: var(--muted); vertical-align: middle; }
.badge.passed { background: var(--pass); } .badge.failed { background: var(--fail); }
.verdict.failed { color: var(--fail); } .verdict.passed { color: var(--pass); }
section.prompt { border: 1px solid var(--line); border-radius: 6px; padding: 14px 18px; margin: 22px 0; }
section.prompt > header { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.reasons { background: #ffebe9; border-left: 4px solid var(--fail); padding: 6px 12px; margin: 10px 0; }
.notes { color: var(--muted); margin: 6px 0; padding-left: 18px; }
.reasons ul { margin: 0; padding-left: 18px; }
.row { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.legend span { margin-right: 12px; white-space: nowrap; color: var(--muted); font-size: 12px; }
.key { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
.no-baseline { color: var(--muted); font-style: italic; }
dl.stats { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 4px 0; }
dl.stats dt { color: var(--muted); } dl.stats dd { margin: 0; font-variant-numeric: tabular-nums; }
.ids { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
table.examples td { font-size: 12.5px; overflow-wrap: anywhere; } table.examples td.text { white-space: pre-wrap; }
tr.flip-wrong td { background: #ffebe9; } tr.flip-right td { background: #dafbe1; }
.tag { display: inline-block; font-size: 11px; font-weight: 600; padding: 0 5px; border-radius: 3px;
       white-space: nowrap; }
.tag.to-wrong { color: #fff; background: var(--fail); } .tag.to-right { color: #fff; background: var(--pass); }
.tag.parse { color: #7d4e00; background: #fff1c2; border: 1px solid #d4a72c; }
.err { color: #7d4e00; } .k { color: var(--muted); }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px;
      white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; }
pre.diff span { display: block; } pre.diff .add { background: #dafbe1; color: #116329; }
pre.diff .del { background: #ffebe9; color: #82071e; } pre.diff .hunk { color: #8250df; }
svg text { font: 10px system-ui, sans-serif; fill: #57606a; }
@media print { body { padding: 0; max-width: none; } section.prompt { break-inside: auto; border: none; padding: 0; }
               a { color: inherit; } tr { break-inside: avoid; } }
"""
NO_VALUE = "\u2014"
SCORE_COLOR = {"passed": "#1a7f37", "failed": "#cf222e"}
MAX_X_LABELS = 10
PLOT_W, PLOT_H = 400, 180  # history plot size; the plot area leaves room for axis labels and the threshold's
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 34, 84, 18, 34


def _e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _num(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """A number with fixed decimals, or a dash when absent."""
    if value is None:
        return NO_VALUE
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _outcome(result: PromptResult) -> str:
    """The outcome as a CSS-safe class word."""
    return result.outcome if result.outcome in ("passed", "failed") else "other"


def _score(result: PromptResult) -> float | None:
    """The score as the JSON report states it: rounded, and absent for an item that could not be evaluated."""
    return None if result.outcome == ERROR else round(result.score, 6)


def _anchor(index: int, name: str) -> str:
    """A unique, attribute-safe id for a prompt's section."""
    return f"p{index}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def render_html(report: RunReport) -> str:
    """The whole report page for a run."""
    anchors = [_anchor(i, p.name) for i, p in enumerate(report.prompts)]
    body = [_page_header(report), _summary_table(report.prompts, anchors)]
    body += [table for table in (_transfer_table(report.prompts, anchors),) if table]
    body += [_prompt_section(p, a) for p, a in zip(report.prompts, anchors, strict=True)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>DSPy prompt report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _page_header(report: RunReport) -> str:
    """Title, overall verdict, model and settings."""
    count, settings = len(report.prompts), report.settings
    failed = sum(1 for p in report.prompts if p.outcome == FAILED)
    verdict = "failed" if failed else "passed"
    text = f"{failed} of {count} prompts failed" if failed else f"all {count} prompts passed"
    return (
        f'<header><h1>DSPy prompt report: <span class="verdict {verdict}">{text}</span></h1>\n'
        f"{_model_line(report.model)}\n"
        f'<p class="meta">alpha <b>{_e(settings.alpha)}</b> &middot; min delta '
        f"<b>{_e(settings.min_delta)}</b> &middot; repeats <b>{_e(settings.repeats)}</b>"
        f" &middot; model calls <b>{_e(report.calls)}</b> ({_e(report.cached)} cached)"
        "</p></header>"
    )


def _model_line(model: ModelIdentity | None) -> str:
    """The model's name, full digest, backend and endpoint (dashes when no prompt recorded one)."""
    if model is None:
        return f'<p class="meta">model <b>{NO_VALUE}</b> <span class="mono"></span> (?, ?)</p>'
    return (f'<p class="meta">model <b>{_e(model.model)}</b> <span class="mono">{_e(model.digest)}</span> '
            f"({_e(model.backend)}, {_e(model.endpoint)})</p>")


def _summary_table(prompts: Sequence[PromptResult], anchors: Sequence[str]) -> str:
    """One row per prompt, linking to its section."""
    head = "".join(f'<th class="num">{h}</th>' for h in ("score", "threshold", "baseline", "delta", "p-value"))
    rows = [f"<tr><th>prompt</th><th>outcome</th>{head}</tr>"]
    for result, anchor in zip(prompts, anchors, strict=True):
        base = result.comparison
        cells = [_score(result), result.threshold, None if base is None else base.baseline_score]
        nums = "".join(f'<td class="num">{_num(v)}</td>' for v in cells)
        nums += _summary_comparison(base)
        rows.append(f'<tr><td><a href="#{anchor}">{_e(result.name)}</a></td>'
                    f"<td>{_badge(result)}</td>{nums}</tr>")
    return '<table class="summary">\n' + "\n".join(rows) + "\n</table>"


def _transfer_table(prompts: Sequence[PromptResult], anchors: Sequence[str]) -> str:
    """``--dspy-target``: one row per prompt and target model (empty when none was checked)."""
    if not any(p.transfer for p in prompts):
        return ""
    head = ("prompt", "target", "model", "rows", "task: written", "optimized", "gain", "target: written",
            "optimized", "gain", "p(gain)", "p(loss)", "verdict")
    rows = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for result, anchor in zip(prompts, anchors, strict=True):
        for t in result.transfer:
            model = (NO_VALUE if t.model is None
                     else f'{_e(t.model.model)} <span class="mono">{_e(t.model.short_digest)}</span>')
            nums = [t.task_written, t.task_optimized, t.task_gain, t.target_written, t.target_optimized, t.target_gain]
            cells = "".join(f'<td class="num">{_num(v, signed=i % 3 == 2)}</td>' for i, v in enumerate(nums))
            lost = " verdict failed" if t.lost else ""
            rows.append(
                f'<tr><td><a href="#{anchor}">{_e(result.name)}</a></td><td>{_e(t.target)}</td><td>{model}</td>'
                f'<td class="num">{_e(t.rows)}{" held-out" if t.heldout else ""}</td>{cells}'
                f'<td class="num">{_num(t.p_gain, 4)}</td><td class="num">{_num(t.p_loss, 4)}</td>'
                f'<td class="{lost.strip()}">{_e(t.verdict)}</td></tr>'
            )
    return ('<h2>Transfer to target models</h2>\n<p class="meta">Score as written and optimized, on the task model '
            "and on each target; p: one-sided paired test on the target.</p>\n"
            '<table class="summary transfer">\n' + "\n".join(rows) + "\n</table>")


def _summary_comparison(base: Comparison | None) -> str:
    """The summary row's delta (red when it regressed) and p-value cells."""
    if base is None:
        return f'<td class="num">{NO_VALUE}</td><td class="num">{NO_VALUE}</td>'
    worse = " verdict failed" if base.regressed else ""
    return f'<td class="num{worse}">{_num(base.delta, signed=True)}</td><td class="num">{_num(base.p_value, 4)}</td>'


def _badge(result: PromptResult) -> str:
    """The outcome as a coloured pill."""
    return f'<span class="badge {_outcome(result)}">{_e(result.outcome)}</span>'


def _prompt_section(result: PromptResult, anchor: str) -> str:
    """Everything about one prompt."""
    parts = [
        f'<section class="prompt" id="{anchor}">\n<header><h2>{_e(result.name)}</h2>'
        f'{_badge(result)}<span class="meta mono">{_e(result.nodeid)}</span></header>',
        _reasons(result), _score_block(result), _regression_block(result, anchor),
        _optimization_block(result.optimization), _examples_table(result, anchor), _prompt_text(result), "</section>",
    ]
    return "\n".join(p for p in parts if p)


def _reasons(result: PromptResult) -> str:
    """Why the prompt failed, then any notes."""
    out = ""
    if result.reasons:
        out += '<div class="reasons"><ul>' + "".join(f"<li>{_e(r)}</li>" for r in result.reasons) + "</ul></div>"
    if result.notes:
        out += '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>"
    return out


def _score_block(result: PromptResult) -> str:
    """Score, threshold and baseline as numbers, a bullet chart and the history plot."""
    baseline = None if result.comparison is None else result.comparison.baseline_score
    stats = (
        f'<dl class="stats"><dt>score</dt><dd><b>{_num(_score(result))}</b> on {_e(result.n)} '
        f'examples</dd><dt>threshold</dt><dd>{_num(result.threshold)}</dd>'
        f'<dt>baseline</dt><dd>{_num(baseline)}</dd>'
        f'<dt>parse failures</dt><dd>{_e(result.parse_failures)}</dd>'
        f'<dt>model calls</dt><dd>{_e(result.calls)} ({_e(result.cached)} cached), '
        f'{_num(round(result.seconds, 3), 1)} s</dd></dl>'
    )
    bullet = _bullet_svg(_score(result), result.threshold, baseline, _outcome(result))
    left = f"<div>{stats}{bullet}{_legend(_outcome(result))}</div>"
    return f'<h3>Score</h3>\n<div class="row">{left}<div>{_history_svg(result)}</div></div>'


def _legend(outcome: str) -> str:
    """Key to the bullet chart's marks."""
    color = SCORE_COLOR.get(outcome, "#57606a")
    return (f'<p class="legend"><span><i class="key" style="background:{color}"></i>this run</span>'
            '<span><i class="key" style="background:#1f2328;width:2px"></i>threshold</span>'
            '<span><i class="key" style="background:#8250df;transform:rotate(45deg)"></i>baseline</span></p>')


def _unit(value: float | None) -> float | None:
    """A score clamped to 0..1, or None when absent."""
    return None if value is None else min(1.0, max(0.0, float(value)))


def _bullet_svg(score: float | None, threshold: float | None, baseline: float | None, outcome: str) -> str:
    """A 0..1 track with the score as a bar, the threshold as a tick and the baseline as a diamond."""
    width, left = 280.0, 10.0
    marks = [f'<rect x="{left}" y="8" width="{width}" height="14" fill="#eaeef2"/>']
    if (s := _unit(score)) is not None:
        color = SCORE_COLOR.get(outcome, "#57606a")
        marks.append(f'<rect class="score-bar" x="{left}" y="10" width="{s * width:.1f}" height="10" fill="{color}"/>')
    if (t := _unit(threshold)) is not None:
        x = left + t * width
        marks.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="4" y2="26" stroke="#1f2328" stroke-width="2"/>')
    if (b := _unit(baseline)) is not None:
        x = left + b * width
        marks.append(f'<path d="M{x:.1f} 9 l6 6 l-6 6 l-6 -6 z" fill="#8250df" stroke="#fff"/>')
    ticks = "".join(f'<text x="{left + v * width:.1f}" y="38" text-anchor="middle">{v:g}</text>'
                    for v in (0, 0.5, 1))
    return (f'<svg class="bullet" viewBox="0 0 300 42" width="300" height="42" role="img" '
            f'aria-label="score against threshold and baseline">{"".join(marks)}{ticks}</svg>')


def _history_points(result: PromptResult) -> list[tuple[str, float, bool]]:
    """(label, score, is-current) for each stored baseline, oldest first, then this run."""
    points = [(h.label, s, False) for h in result.history if (s := _unit(h.score)) is not None]
    return [*points, ("this run", _unit(_score(result)) or 0.0, True)]


def _history_svg(result: PromptResult) -> str:
    """A line chart of the score history with this run last and the threshold dashed."""
    left, top = PLOT_LEFT, PLOT_TOP
    points = _history_points(result)
    pw, ph = PLOT_W - PLOT_LEFT - PLOT_RIGHT, PLOT_H - PLOT_TOP - PLOT_BOTTOM
    xy = [(left + pw * (i + 0.5) / len(points), top + (1 - p[1]) * ph) for i, p in enumerate(points)]
    parts = [_history_axes(left, top, pw, ph), _threshold_line(result.threshold, left, top, pw, ph)]
    if len(xy) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(f'<polyline class="history-line" points="{line}" fill="none" stroke="#57606a" '
                     'stroke-width="1.5"/>')
    color = SCORE_COLOR.get(_outcome(result), "#57606a")
    for (label, score, current), (x, y) in zip(points, xy, strict=True):
        parts.append(_history_point(label, score, current, x, y, color, len(points) <= MAX_X_LABELS))
    return (f'<svg class="history-plot" viewBox="0 0 {PLOT_W} {PLOT_H}" width="{PLOT_W}" height="{PLOT_H}" '
            f'role="img" aria-label="score history">{"".join(parts)}</svg>')


def _history_axes(left: float, top: float, pw: float, ph: float) -> str:
    """Y axis 0..1 with grid lines at 0, 0.5 and 1."""
    out = []
    for v in (0.0, 0.5, 1.0):
        y = top + (1 - v) * ph
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
                   f'<text x="{left - 6}" y="{y + 3:.1f}" text-anchor="end">{v:g}</text>')
    return "".join(out) + f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#8c959f"/>'


def _threshold_line(threshold: float | None, left: float, top: float, pw: float, ph: float) -> str:
    """The threshold as a dashed horizontal line, labelled at its right end."""
    if (t := _unit(threshold)) is None:
        return ""
    y = top + (1 - t) * ph
    return (f'<line class="threshold" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#cf222e" '
            f'stroke-dasharray="5 4"/><text x="{left + pw + 4}" y="{y + 3:.1f}">threshold {t:.2f}</text>')


def _history_point(label: str, score: float, current: bool, x: float, y: float, color: str, labels: bool) -> str:
    """One labelled point; this run's is larger and coloured by outcome."""
    fill, radius = (color, 5) if current else ("#57606a", 3.5)
    text = f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle">{score:.3f}</text>' if labels else ""
    short = label if len(label) <= 14 else label[:13] + "\u2026"
    if labels:
        text += f'<text x="{x:.1f}" y="{PLOT_H - PLOT_BOTTOM + 16}" text-anchor="middle">{_e(short)}</text>'
    title = f"<title>{_e(label)}: {score:.3f}</title>"
    return f'<g class="point"><circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{fill}">{title}</circle>{text}</g>'


def _regression_block(result: PromptResult, anchor: str) -> str:
    """The paired comparison with the baseline, or why there is none."""
    base = result.comparison
    if base is None:
        return '<h3>Regression</h3>\n<p class="no-baseline">no baseline: gated on the threshold only</p>'
    verdict = '<b class="verdict failed">yes</b>' if base.regressed else '<span class="verdict passed">no</span>'
    stats = (
        f'<dl class="stats"><dt>baseline &rarr; this run</dt><dd>{_num(base.baseline_score)} &rarr; '
        f'{_num(base.score)} on {_e(base.n_paired)} paired examples</dd>'
        f'<dt>delta</dt><dd><b>{_num(base.delta, signed=True)}</b> (CI [{_num(base.ci[0], signed=True)}, '
        f'{_num(base.ci[1], signed=True)}])</dd><dt>p-value</dt><dd>{_num(base.p_value, 4)} '
        f'({_e(base.test)})</dd><dt>regressed</dt><dd>{verdict}</dd>'
    )
    rows = _source_anchors(result, anchor)
    lists = [("flipped to wrong", base.to_wrong), ("flipped to right", base.to_right),
             ("added", base.added), ("removed", base.removed)]
    items = "".join(f"<dt>{title}</dt><dd>{_id_list(ids, rows)}</dd>" for title, ids in lists)
    return f'<h3>Regression</h3>\n{stats}{items}</dl>'


def _optimization_block(outcome: OptimizationOutcome | None) -> str:
    """``--optimize``: the held-out paired test, the decision, and every held-out row won or lost."""
    if outcome is None:
        return ""
    o = outcome
    stats = (
        f'<dl class="stats"><dt>held-out</dt><dd>{_num(o.before)} &rarr; {_num(o.after)} on {_e(o.heldout)} rows '
        f'({_e(o.optimizer)}, {_e(o.train)} train rows)</dd><dt>gain</dt><dd><b>{_num(o.gain, signed=True)}</b> '
        f'(CI [{_num(o.ci[0], signed=True)}, {_num(o.ci[1], signed=True)}])</dd><dt>p-value</dt>'
        f'<dd>{_num(o.p_value, 4)} ({_e(o.test or "not tested")}, alpha {_e(o.alpha)})</dd>'
        f'<dt>decision</dt><dd>{_e(o.verdict)}</dd><dt>model calls</dt><dd>{_e(o.calls)} of ~{_e(o.projected)} '
        f'projected{"; budget reached: " + _e(o.budget) if o.budget_reached else ""}</dd></dl>'
    )
    head = ('<tr><th>held-out row</th><th>inputs</th><th>expected</th><th>old answer</th><th>new answer</th>'
            '<th class="num">old &rarr; new</th></tr>')
    rows = [f'<tr class="{"flip-right" if c.won else "flip-wrong"}"><td class="mono">{_e(c.source)}</td>'
            f'<td class="text">{_fields(c.inputs)}</td><td class="text">{_fields(c.expected)}</td>'
            f'<td class="text">{_fields(c.old)}</td><td class="text">{_fields(c.new)}</td>'
            f'<td class="num">{_num(c.old_score, 2)} &rarr; {_num(c.new_score, 2)}</td></tr>' for c in o.changes]
    table = (f'<table class="examples">\n{head}\n' + "\n".join(rows) + "\n</table>") if rows else ""
    demos = "".join(f"<li>{_e(title)}: <code>{_e(d)}</code></li>"
                    for title, items in (("added", o.demos_added), ("removed", o.demos_removed)) for d in items)
    return (f"<h3>Optimization: {len(o.won)} held-out rows won, {len(o.lost)} lost</h3>\n{stats}{table}"
            + (f'<ul class="notes">{demos}</ul>' if demos else ""))


def _source_anchors(result: PromptResult, anchor: str) -> dict[str, str]:
    """Each example's source (and id) mapped to its row's id in the examples table."""
    rows: dict[str, str] = {}
    for i, example in enumerate(result.examples):
        for key in (example.id, example.source):
            rows.setdefault(key, f"{anchor}-ex{i}")
    return rows


def _id_list(ids: Sequence[str], rows: Mapping[str, str]) -> str:
    """Example sources, each linked to its row when it is in this run."""
    if not ids:
        return '<span class="k">none</span>'
    links = [f'<a href="#{rows[i]}">{_e(i)}</a>' if i in rows else _e(i) for i in ids]
    return f'{len(ids)}: <span class="ids">{", ".join(links)}</span>'


def _examples_table(result: PromptResult, anchor: str) -> str:
    """Every example, flips highlighted and parse failures marked."""
    if not result.examples:
        return '<h3>Examples</h3>\n<p class="k">no examples recorded</p>'
    widths = "".join(f'<col style="width:{w}%">' for w in (19, 34, 14, 19, 7, 7))
    head = (f'<colgroup>{widths}</colgroup><tr><th>source</th><th>inputs</th><th>expected</th><th>got</th>'
            '<th class="num">score</th><th class="num">baseline</th></tr>')
    rows = [_example_row(e, f"{anchor}-ex{i}") for i, e in enumerate(result.examples)]
    return f'<h3>Examples ({result.n})</h3>\n<table class="examples">\n{head}\n' + "\n".join(rows) + "\n</table>"


FLIPS = {"to_wrong": ("flip-wrong", '<span class="tag to-wrong">&darr; to wrong</span>'),
         "to_right": ("flip-right", '<span class="tag to-right">&uarr; to right</span>')}


def _example_row(example: ExampleResult, row_id: str) -> str:
    """One example as a table row."""
    css, tag = FLIPS.get(example.flip or "", ("", ""))
    got = _fields(example.got)
    if example.error:
        got = f'<span class="tag parse">parse failure</span> <span class="err">{_e(example.error)}</span>'
        css += " parse-failure"
    cls = f' class="{css.strip()}"' if css.strip() else ""
    return (f'<tr id="{row_id}"{cls}><td class="mono">{_e(example.source)} {tag}</td>'
            f'<td class="text">{_fields(example.inputs)}</td><td class="text">{_fields(example.expected)}'
            f'</td><td class="text">{got}</td><td class="num">{_num(example.score, 2)}</td>'
            f'<td class="num">{_num(example.baseline_score, 2)}</td></tr>')


def _fields(values: Mapping[str, Any] | None) -> str:
    """Fields as ``key: value`` lines; strings shown raw, other values as JSON."""
    if values is None:
        return NO_VALUE
    lines = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f'<span class="k">{_e(key)}:</span> {_e(text)}')
    return "\n".join(lines) or NO_VALUE


def _prompt_text(result: PromptResult) -> str:
    """The prompt as the model sees it, with a line diff against the baseline's."""
    current = None if result.prompt is None else result.prompt.current
    baseline = None if result.prompt is None else result.prompt.baseline
    if current is None:
        return '<h3>Prompt</h3>\n<p class="k">prompt text not recorded</p>'
    if baseline is None:
        change = '<p class="no-baseline">no baseline prompt</p>'
    elif baseline == current:
        change = '<p class="k">unchanged since the baseline</p>'
    else:
        change = f'<p class="k">changed since the baseline:</p>\n{_diff_html(baseline, current)}'
    now = '<p class="k">as the model sees it in this run:</p>'
    return f'<h3>Prompt</h3>\n{change}\n{now}\n<pre class="prompt-text">{_e(current)}</pre>'


def _diff_html(before: str, after: str) -> str:
    """A unified line diff, added and removed lines coloured."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "baseline", "this run", lineterm="")
    out = []
    for line in lines:
        css = "hunk" if line.startswith("@@") else "file" if line[:3] in ("---", "+++") else \
            {"+": "add", "-": "del"}.get(line[:1], "ctx")
        out.append(f'<span class="{css}">{_e(line) or " "}</span>')
    return '<pre class="diff">' + "".join(out) + "</pre>"
