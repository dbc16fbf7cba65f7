"""Client overhead: examples/s through the plugin vs a bare httpx client sending the same requests.

Both send the same chat-completions bodies (recorded from the plugin's own warm-up pass)
to the same latency-bound loopback server (tests/servers/latency_server.py: real SmolLM2
answers, memoized, then a fixed latency per answer, concurrently), at concurrency 1 and
16. Throughput is requests answered per second of the server's busy window (first request
in to last answer out), so pytest's start-up is not counted against the plugin; the
pytest wall time is reported beside it. Target: plugin/bare >= 0.9 at both levels.

    .venv/bin/python bench/bench_client_overhead.py [--examples 48] [--latency 0.3] [--memo PATH]
"""

from __future__ import annotations

from pathlib import Path

import benchlib
from benchlib import Result, bare_pass, pass_figures, ratio, serial_fallback, warm_pass

LEVELS = (1, 16)


def measure(result: Result, examples: int, latency: float, memo: Path | None) -> None:
    """Warm the server's memo, then time the plugin and the bare client at each level."""
    with benchlib.latency_triage("client", examples, latency, memo) as (server, project):
        bodies = warm_pass(server, project)
        result.figures["requests_per_pass"] = len(bodies)
        for level in LEVELS:
            plugin = serial_fallback(server, project, level, result.notes)
            bare = bare_pass(server, bodies, level)
            bare["examples_per_s"] = bare["requests"] / bare["window"]
            result.figures[f"concurrency {level}"] = {"plugin": pass_figures(plugin), "bare": bare}
            plugin_rate = plugin.examples_per_s if plugin else None
            result.ratios[f"plugin/bare examples/s at concurrency {level}"] = ratio(plugin_rate, bare["examples_per_s"])


def main() -> None:
    """Measure and report."""
    args = benchlib.server_parser(__doc__, examples=48, latency=0.3).parse_args()
    result = Result("client overhead", "examples/s: plugin vs bare httpx, same requests, concurrency 1 and 16",
                    ">= 0.9 at both levels")
    result.figures.update(examples=args.examples, latency=args.latency)
    measure(result, args.examples, args.latency, args.memo)
    if any(v is None for v in result.ratios.values()):
        result.status = "partial"
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
