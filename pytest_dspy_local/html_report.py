"""A self-contained, offline HTML page of a run's JSON report, for human reviewers of a CI run.

The page has no scripts and nothing a browser would fetch: CSS and SVG charts are inline, and
every value taken from the document is escaped, since prompts and example data are untrusted.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

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


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _num(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number with fixed decimals, or a dash when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return NO_VALUE
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _outcome(prompt: Mapping[str, Any]) -> str:
    """The outcome as a CSS-safe class word."""
    outcome = prompt.get("outcome")
    return outcome if outcome in ("passed", "failed") else "other"


def _anchor(index: int, name: Any) -> str:
    """A unique, attribute-safe id for a prompt's section."""
    return f"p{index}-" + re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")


def render_html(document: dict[str, Any]) -> str:
    """The whole report page for a schema-1 report document."""
    prompts = [p for p in document.get("prompts") or [] if isinstance(p, Mapping)]
    anchors = [_anchor(i, p.get("name")) for i, p in enumerate(prompts)]
    body = [_page_header(document), _summary_table(prompts, anchors)]
    body += [_prompt_section(p, a) for p, a in zip(prompts, anchors, strict=True)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>DSPy prompt report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _page_header(document: Mapping[str, Any]) -> str:
    """Title, overall verdict, model and settings."""
    model, settings = document.get("model") or {}, document.get("settings") or {}
    totals, prompts = document.get("totals") or {}, document.get("prompts") or []
    failed = sum(1 for p in prompts if isinstance(p, Mapping) and p.get("outcome") == "failed")
    verdict = "failed" if failed else "passed"
    text = f"{failed} of {len(prompts)} prompts failed" if failed else f"all {len(prompts)} prompts passed"
    return (
        f'<header><h1>DSPy prompt report: <span class="verdict {verdict}">{text}</span></h1>\n'
        f'<p class="meta">model <b>{_e(model.get("model", NO_VALUE))}</b> '
        f'<span class="mono">{_e(model.get("digest", ""))}</span> ({_e(model.get("backend", "?"))}, '
        f'{_e(model.get("endpoint", "?"))})</p>\n'
        f'<p class="meta">alpha <b>{_e(settings.get("alpha", NO_VALUE))}</b> &middot; min delta '
        f'<b>{_e(settings.get("min_delta", NO_VALUE))}</b> &middot; repeats <b>{_e(settings.get("repeats", 1))}</b>'
        f' &middot; model calls <b>{_e(totals.get("model_calls", 0))}</b> ({_e(totals.get("cached", 0))} cached)'
        "</p></header>"
    )


def _summary_table(prompts: Sequence[Mapping[str, Any]], anchors: Sequence[str]) -> str:
    """One row per prompt, linking to its section."""
    head = "".join(f'<th class="num">{h}</th>' for h in ("score", "threshold", "baseline", "delta", "p-value"))
    rows = [f"<tr><th>prompt</th><th>outcome</th>{head}</tr>"]
    for prompt, anchor in zip(prompts, anchors, strict=True):
        base = prompt.get("baseline") or {}
        cells = [prompt.get("score"), prompt.get("threshold"), base.get("baseline_score")]
        nums = "".join(f'<td class="num">{_num(v)}</td>' for v in cells)
        worse = ' verdict failed' if base.get("regressed") else ""
        nums += f'<td class="num{worse}">{_num(base.get("delta"), signed=True)}</td>'
        nums += f'<td class="num">{_num(base.get("p_value"), 4)}</td>'
        rows.append(f'<tr><td><a href="#{anchor}">{_e(prompt.get("name", "?"))}</a></td>'
                    f"<td>{_badge(prompt)}</td>{nums}</tr>")
    return '<table class="summary">\n' + "\n".join(rows) + "\n</table>"


def _badge(prompt: Mapping[str, Any]) -> str:
    """The outcome as a coloured pill."""
    return f'<span class="badge {_outcome(prompt)}">{_e(prompt.get("outcome", "?"))}</span>'


def _prompt_section(prompt: Mapping[str, Any], anchor: str) -> str:
    """Everything about one prompt."""
    parts = [
        f'<section class="prompt" id="{anchor}">\n<header><h2>{_e(prompt.get("name", "?"))}</h2>'
        f'{_badge(prompt)}<span class="meta mono">{_e(prompt.get("nodeid", ""))}</span></header>',
        _reasons(prompt), _score_block(prompt), _regression_block(prompt, anchor),
        _examples_table(prompt, anchor), _prompt_text(prompt), "</section>",
    ]
    return "\n".join(p for p in parts if p)


def _reasons(prompt: Mapping[str, Any]) -> str:
    """Why the prompt failed, then any notes."""
    reasons, notes = prompt.get("reasons") or [], prompt.get("notes") or []
    out = ""
    if reasons:
        out += '<div class="reasons"><ul>' + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul></div>"
    if notes:
        out += '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    return out


def _score_block(prompt: Mapping[str, Any]) -> str:
    """Score, threshold and baseline as numbers, a bullet chart and the history plot."""
    base = prompt.get("baseline") or {}
    stats = (
        f'<dl class="stats"><dt>score</dt><dd><b>{_num(prompt.get("score"))}</b> on {_e(prompt.get("n", "?"))} '
        f'examples</dd><dt>threshold</dt><dd>{_num(prompt.get("threshold"))}</dd>'
        f'<dt>baseline</dt><dd>{_num(base.get("baseline_score"))}</dd>'
        f'<dt>parse failures</dt><dd>{_e(prompt.get("parse_failures", 0))}</dd>'
        f'<dt>model calls</dt><dd>{_e(prompt.get("model_calls", 0))} ({_e(prompt.get("cached", 0))} cached), '
        f'{_num(prompt.get("seconds"), 1)} s</dd></dl>'
    )
    bullet = _bullet_svg(prompt.get("score"), prompt.get("threshold"), base.get("baseline_score"), _outcome(prompt))
    left = f"<div>{stats}{bullet}{_legend(_outcome(prompt))}</div>"
    return f'<h3>Score</h3>\n<div class="row">{left}<div>{_history_svg(prompt)}</div></div>'


def _legend(outcome: str) -> str:
    """Key to the bullet chart's marks."""
    color = SCORE_COLOR.get(outcome, "#57606a")
    return (f'<p class="legend"><span><i class="key" style="background:{color}"></i>this run</span>'
            '<span><i class="key" style="background:#1f2328;width:2px"></i>threshold</span>'
            '<span><i class="key" style="background:#8250df;transform:rotate(45deg)"></i>baseline</span></p>')


def _unit(value: Any) -> float | None:
    """A score clamped to 0..1, or None when absent."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return min(1.0, max(0.0, float(value)))


def _bullet_svg(score: Any, threshold: Any, baseline: Any, outcome: str) -> str:
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


def _history_points(prompt: Mapping[str, Any]) -> list[tuple[str, float, bool]]:
    """(label, score, is-current) for each stored baseline, oldest first, then this run."""
    points = [(str(h.get("label", "")), s, False) for h in prompt.get("history") or []
              if isinstance(h, Mapping) and (s := _unit(h.get("score"))) is not None]
    return [*points, ("this run", _unit(prompt.get("score")) or 0.0, True)]


def _history_svg(prompt: Mapping[str, Any]) -> str:
    """A line chart of the score history with this run last and the threshold dashed."""
    left, top = PLOT_LEFT, PLOT_TOP
    points = _history_points(prompt)
    pw, ph = PLOT_W - PLOT_LEFT - PLOT_RIGHT, PLOT_H - PLOT_TOP - PLOT_BOTTOM
    xy = [(left + pw * (i + 0.5) / len(points), top + (1 - p[1]) * ph) for i, p in enumerate(points)]
    parts = [_history_axes(left, top, pw, ph), _threshold_line(prompt.get("threshold"), left, top, pw, ph)]
    if len(xy) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(f'<polyline class="history-line" points="{line}" fill="none" stroke="#57606a" '
                     'stroke-width="1.5"/>')
    color = SCORE_COLOR.get(_outcome(prompt), "#57606a")
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


def _threshold_line(threshold: Any, left: float, top: float, pw: float, ph: float) -> str:
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



def _regression_block(prompt: Mapping[str, Any], anchor: str) -> str:
    """The paired comparison with the baseline, or why there is none."""
    base = prompt.get("baseline")
    if not isinstance(base, Mapping):
        return '<h3>Regression</h3>\n<p class="no-baseline">no baseline: gated on the threshold only</p>'
    ci = base.get("ci") or [None, None]
    verdict = '<b class="verdict failed">yes</b>' if base.get("regressed") else '<span class="verdict passed">no</span>'
    stats = (
        f'<dl class="stats"><dt>baseline &rarr; this run</dt><dd>{_num(base.get("baseline_score"))} &rarr; '
        f'{_num(base.get("score"))} on {_e(base.get("n_paired", "?"))} paired examples</dd>'
        f'<dt>delta</dt><dd><b>{_num(base.get("delta"), signed=True)}</b> (CI [{_num(ci[0], signed=True)}, '
        f'{_num(ci[-1], signed=True)}])</dd><dt>p-value</dt><dd>{_num(base.get("p_value"), 4)} '
        f'({_e(base.get("test", "?"))})</dd><dt>regressed</dt><dd>{verdict}</dd>'
    )
    rows = _source_anchors(prompt, anchor)
    lists = [("flipped to wrong", "flipped_to_wrong"), ("flipped to right", "flipped_to_right"),
             ("added", "added"), ("removed", "removed")]
    items = "".join(f"<dt>{title}</dt><dd>{_id_list(base.get(key) or [], rows)}</dd>" for title, key in lists)
    return f'<h3>Regression</h3>\n{stats}{items}</dl>'


def _source_anchors(prompt: Mapping[str, Any], anchor: str) -> dict[str, str]:
    """Each example's source (and id) mapped to its row's id in the examples table."""
    rows: dict[str, str] = {}
    for i, example in enumerate(e for e in prompt.get("examples") or [] if isinstance(e, Mapping)):
        for key in ("id", "source"):
            rows.setdefault(str(example.get(key)), f"{anchor}-ex{i}")
    return rows


def _id_list(ids: Sequence[Any], rows: Mapping[str, str]) -> str:
    """Example sources, each linked to its row when it is in this run."""
    if not ids:
        return '<span class="k">none</span>'
    links = [f'<a href="#{rows[str(i)]}">{_e(i)}</a>' if str(i) in rows else _e(i) for i in ids]
    return f'{len(ids)}: <span class="ids">{", ".join(links)}</span>'


def _examples_table(prompt: Mapping[str, Any], anchor: str) -> str:
    """Every example, flips highlighted and parse failures marked."""
    examples = [e for e in prompt.get("examples") or [] if isinstance(e, Mapping)]
    if not examples:
        return '<h3>Examples</h3>\n<p class="k">no examples recorded</p>'
    widths = "".join(f'<col style="width:{w}%">' for w in (19, 34, 14, 19, 7, 7))
    head = (f'<colgroup>{widths}</colgroup><tr><th>source</th><th>inputs</th><th>expected</th><th>got</th>'
            '<th class="num">score</th><th class="num">baseline</th></tr>')
    rows = [_example_row(e, f"{anchor}-ex{i}") for i, e in enumerate(examples)]
    return f'<h3>Examples ({len(examples)})</h3>\n<table class="examples">\n{head}\n' + "\n".join(rows) + "\n</table>"


FLIPS = {"to_wrong": ("flip-wrong", '<span class="tag to-wrong">&darr; to wrong</span>'),
         "to_right": ("flip-right", '<span class="tag to-right">&uarr; to right</span>')}


def _example_row(example: Mapping[str, Any], row_id: str) -> str:
    """One example as a table row."""
    css, tag = FLIPS.get(str(example.get("flip")), ("", ""))
    got = _fields(example.get("got"))
    if example.get("error"):
        got = f'<span class="tag parse">parse failure</span> <span class="err">{_e(example["error"])}</span>'
        css += " parse-failure"
    cls = f' class="{css.strip()}"' if css.strip() else ""
    return (f'<tr id="{row_id}"{cls}><td class="mono">{_e(example.get("source", "?"))} {tag}</td>'
            f'<td class="text">{_fields(example.get("inputs"))}</td><td class="text">{_fields(example.get("expected"))}'
            f'</td><td class="text">{got}</td><td class="num">{_num(example.get("score"), 2)}</td>'
            f'<td class="num">{_num(example.get("baseline_score"), 2)}</td></tr>')


def _fields(values: Any) -> str:
    """A dict of fields as ``key: value`` lines; strings shown raw, other values as JSON."""
    if not isinstance(values, Mapping):
        return NO_VALUE if values is None else _e(json.dumps(values, ensure_ascii=False))
    lines = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f'<span class="k">{_e(key)}:</span> {_e(text)}')
    return "\n".join(lines) or NO_VALUE


def _prompt_text(prompt: Mapping[str, Any]) -> str:
    """The prompt as the model sees it, with a line diff against the baseline's."""
    texts = prompt.get("prompt") or {}
    current, baseline = texts.get("current"), texts.get("baseline")
    if not isinstance(current, str):
        return '<h3>Prompt</h3>\n<p class="k">prompt text not recorded</p>'
    if not isinstance(baseline, str):
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
