"""Concurrency speed-up: the plugin at --dspy-concurrency 16 (and 8) vs 1 against a latency-bound server.

The server is tests/servers/latency_server.py (real SmolLM2 answers, memoized by a
warm-up pass, then a fixed latency per answer, served concurrently), so throughput can
only grow with requests in flight. Speed-up is the ratio of the server's busy windows
(first request in to last answer out); the prompt item's own seconds (its evaluation, from
the JSON report) and pytest wall times (which add the same start-up at every level) are
reported beside. It also
checks that every level gives the same score and the same per-example results as level 1,
and how many requests each level kept in flight. Target: >= 10x at 16 (issue 9 asks >= 4x
with 8 in flight at 8).

    .venv/bin/python bench/bench_concurrency.py [--examples 48] [--latency 0.3] [--memo PATH]
"""

from __future__ import annotations

from pathlib import Path

import benchlib
from benchlib import Pass, Result, pass_figures, per_example, ratio, serial_fallback, warm_pass

LEVELS = (1, 8, 16)


def window(p: Pass | None) -> float | None:
    """The server's busy window of a pass."""
    return None if p is None else p.stats.get("window")


def item_seconds(p: Pass | None) -> float | None:
    """The prompt item's own seconds (from the JSON report): pytest's start-up left out."""
    if p is None:
        return None
    seconds = [q.get("seconds") for q in p.report.get("prompts", [])]
    return seconds[0] if len(seconds) == 1 else None


def measure(result: Result, examples: int, latency: float, memo: Path | None) -> None:
    """Warm the memo, then run the plugin at each level and compare with level 1."""
    with benchlib.latency_triage("concurrency", examples, latency, memo) as (server, project):
        warm_pass(server, project)
        passes = {level: serial_fallback(server, project, level, result.notes) for level in LEVELS}
    serial = passes[1]
    assert serial is not None
    for level in LEVELS[1:]:
        p = passes[level]
        result.ratios[f"speed-up {level} vs 1 (server window)"] = ratio(window(serial), window(p))
        result.ratios[f"speed-up {level} vs 1 (prompt item)"] = ratio(item_seconds(serial), item_seconds(p))
        result.ratios[f"speed-up {level} vs 1 (pytest wall)"] = ratio(serial.run.wall, p.run.wall if p else None)
        if p is not None:
            result.figures[f"same results at {level} as at 1"] = per_example(p.report) == per_example(serial.report)
    result.figures["levels"] = {str(level): pass_figures(p) for level, p in passes.items()}


def main() -> None:
    """Measure and report."""
    args = benchlib.server_parser(__doc__, examples=48, latency=0.3).parse_args()
    result = Result("concurrency speed-up", "the plugin at concurrency 16 and 8 vs 1, same latency-bound server",
                    ">= 10x at 16; >= 4x with 8 in flight at 8; same results")
    result.figures.update(examples=args.examples, latency=args.latency)
    measure(result, args.examples, args.latency, args.memo)
    if any(v is None for v in result.ratios.values()):
        result.status = "not available"
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
