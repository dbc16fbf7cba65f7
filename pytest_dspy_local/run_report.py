"""Run reports for CI: the JSON summary (``--dspy-json``), the Markdown summary for pull
requests (``$GITHUB_STEP_SUMMARY``) and the HTML report (``--dspy-report``), all built
from one document so they never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_dspy_local.snapshot import stable_json, write_atomically

SCHEMA = "pytest-dspy-local/report"
VERSION = 1
FLIPS_SHOWN = 10


def prompt_entry(result: dict[str, Any], outcome: str) -> dict[str, Any]:
    """One prompt item's entry from its result (``EvalResult.to_dict``)."""
    examples = result.get("examples", [])
    n = len(examples)
    return {
        "nodeid": result["nodeid"],
        "name": result["name"],
        "outcome": outcome,
        "score": round(sum(e["score"] for e in examples) / n, 6) if n else 0.0,
        "threshold": result.get("threshold"),
        "n": n,
        "repeats": result.get("repeats", 1),
        "parse_failures": sum(1 for e in examples if e.get("error")),
        "seconds": round(float(result.get("seconds", 0.0)), 3),
        "model_calls": result.get("calls", 0),
        "cached": result.get("cached", 0),
        "reasons": result.get("reasons", []),
        "notes": result.get("notes", []),
        "baseline": result.get("comparison"),
        "examples": examples,
        "history": result.get("history", []),
        "prompt": result.get("prompt", {}),
        "model": result.get("model", {}),
    }


def error_entry(nodeid: str, message: str) -> dict[str, Any]:
    """An item that could not be evaluated (bad input, unreachable model)."""
    name = nodeid.rsplit("::", 1)[-1]
    return {"nodeid": nodeid, "name": name, "outcome": "error", "score": None, "threshold": None, "n": 0,
            "repeats": 1, "parse_failures": 0, "seconds": 0.0, "model_calls": 0, "cached": 0,
            "reasons": [message], "notes": [], "baseline": None, "examples": [], "history": [],
            "prompt": {}, "model": {}}


def document(entries: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The whole report document (schema ``pytest-dspy-local/report``, version 1)."""
    prompts = sorted(entries, key=lambda e: str(e["nodeid"]))
    model: dict[str, Any] = next((e["model"] for e in prompts if e.get("model")), {})
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "model": model,
        "settings": settings,
        "totals": {
            "prompts": len(prompts),
            "passed": sum(1 for e in prompts if e["outcome"] == "passed"),
            "failed": sum(1 for e in prompts if e["outcome"] != "passed"),
            "model_calls": sum(int(e["model_calls"]) for e in prompts),
            "cached": sum(int(e["cached"]) for e in prompts),
        },
        "prompts": prompts,
    }


def _number(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _row(entry: dict[str, Any]) -> str:
    baseline = entry["baseline"] or {}
    delta = _number(baseline.get("delta"), signed=True)
    if baseline.get("ci"):
        delta += f" [{baseline['ci'][0]:+.3f}, {baseline['ci'][1]:+.3f}]"
    p_value = f"{baseline['p_value']:.4f}" if baseline.get("p_value") is not None else "-"
    mark = {"passed": "✅ passed", "failed": "❌ failed"}.get(entry["outcome"], "⚠️ error")
    return (f"| `{entry['name']}` | {mark} | {_number(entry['score'])} | {_number(entry['threshold'])} | "
            f"{_number(baseline.get('baseline_score'))} | {delta} | {p_value} | {entry['n']} |")


def _details(entry: dict[str, Any]) -> list[str]:
    lines = [f"**`{entry['name']}`** ({entry['nodeid']})", ""]
    lines += [f"- {reason}" for reason in entry["reasons"]]
    flipped = (entry["baseline"] or {}).get("flipped_to_wrong", [])
    if flipped:
        shown = ", ".join(f"`{s}`" for s in flipped[:FLIPS_SHOWN])
        more = f" and {len(flipped) - FLIPS_SHOWN} more" if len(flipped) > FLIPS_SHOWN else ""
        lines.append(f"- flipped from right to wrong: {shown}{more}")
    return [*lines, ""]


def markdown(doc: dict[str, Any]) -> str:
    """A pull-request comment: one table row per prompt, then why each failure failed."""
    totals, model = doc["totals"], doc["model"]
    lines = ["## Prompt evaluation (pytest-dspy-local)", "",
             f"{totals['passed']} of {totals['prompts']} prompts passed on `{model.get('model', '?')}` "
             f"({model.get('backend', '?')}, `{str(model.get('digest', ''))[:19]}`); "
             f"{totals['model_calls']} model calls, {totals['cached']} cached.", "",
             "| prompt | result | score | threshold | baseline | Δ (95% CI) | p | n |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_row(entry) for entry in doc["prompts"]]
    failures = [entry for entry in doc["prompts"] if entry["outcome"] != "passed"]
    if failures:
        lines += ["", "### Failures", ""]
        for entry in failures:
            lines += _details(entry)
    return "\n".join(lines).rstrip() + "\n"


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write the JSON summary atomically."""
    write_atomically({path: stable_json(doc).encode()})


def append_step_summary(path: Path, doc: dict[str, Any]) -> None:
    """Append the Markdown summary to GitHub Actions' step summary file."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(markdown(doc) + "\n")
