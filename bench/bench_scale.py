"""Scale: one prompt evaluated at 100, 1,000 and 10,000 examples; time per example and pytest's peak RSS.

The prompt's data file has 10,000 rows cycling through 100 distinct tickets (example ids
are file:line, so each row is its own example); ``--dspy-max-examples`` picks the size.
Mode ``cache`` (default): the plugin's answer cache is filled by a first run at 100
examples against the latency server, after which every run is answered from the cache.
Mode ``server``: ``--dspy-no-cache`` against tests/servers/latency_server.py with its
memo warm and ``--latency`` (default 0) per answer, at ``--dspy-concurrency`` when the
plugin has it. Target: time linear in the examples (per-example time flat), peak RSS
bounded; both are reported.

    .venv/bin/python bench/bench_scale.py [--mode cache|server] [--sizes 100,1000,10000] [--memo PATH]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import benchlib
from benchlib import OptionMissing, Result, concurrency_args, ratio, warm_pass

DISTINCT = 100


def scale_project(root: Path, size: int) -> Path:
    """The triage project with ``size`` rows cycling through ``DISTINCT`` tickets."""
    distinct = benchlib.tickets(DISTINCT)
    benchlib.triage_project(root, [distinct[i % DISTINCT] for i in range(size)])
    return root


def one_size(base_url: str, project: Path, size: int, mode: str, extra: list[str]) -> dict[str, Any]:
    """One pytest run at ``size`` examples: wall, the item's seconds, peak RSS, calls."""
    report = project / f"report-{size}.json"
    args = [*benchlib.openai_args(base_url, report, cache=mode == "cache"), f"--dspy-max-examples={size}", *extra]
    done = benchlib.pytest(args, project)
    prompt = benchlib.read_report(report)["prompts"][0]
    return {"examples": prompt["n"], "pytest_wall_s": round(done.wall, 3), "item_seconds": prompt["seconds"],
            "ms_per_example": round(1000 * prompt["seconds"] / prompt["n"], 3),
            "peak_rss_mb": round(done.max_rss_mb, 1), "model_calls": prompt.get("model_calls"),
            "cached": prompt.get("cached")}  # fmt: skip


def sizes_at(base_url: str, project: Path, sizes: list[int], mode: str, concurrency: int,
             notes: list[str]) -> list[dict[str, Any]]:
    """Every size, at ``concurrency`` in server mode (serially when the plugin lacks the option)."""
    extra = concurrency_args(concurrency) if mode == "server" else []
    try:
        return [one_size(base_url, project, n, mode, extra) for n in sizes]
    except OptionMissing as exc:
        notes.append(f"{exc}; measured serially")
        return [one_size(base_url, project, n, mode, []) for n in sizes]


def measure(result: Result, mode: str, sizes: list[int], latency: float, concurrency: int, memo: Path | None) -> None:
    """Warm the server (and in cache mode the answer cache), then run each size, largest last."""
    benchlib.sys_path_for_servers()
    from servers.latency_server import serve

    with benchlib.workdir("scale") as tmp, serve(latency, memo=memo) as server:
        project = scale_project(tmp / "scale", max(sizes))
        warm_pass(server, scale_project(tmp / "prime", DISTINCT), concurrency)
        if mode == "cache":
            one_size(server.base_url, project, DISTINCT, mode, [])  # fills the answer cache
        server.reset_stats()
        rows = sizes_at(server.base_url, project, sizes, mode, concurrency, result.notes)
        result.figures["server"] = server.stats()
    result.figures["sizes"] = rows
    first, last = rows[0], rows[-1]
    label = f"{last['examples']} vs {first['examples']}"
    result.ratios[f"ms per example, {label}"] = ratio(last["ms_per_example"], first["ms_per_example"])
    result.ratios[f"peak RSS, {label}"] = ratio(last["peak_rss_mb"], first["peak_rss_mb"])


def main() -> None:
    """Measure and report."""
    p = benchlib.server_parser(__doc__, latency=0.0)
    p.add_argument("--mode", choices=("cache", "server"), default="cache")
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    result = Result(f"scale ({args.mode})", f"one prompt at {', '.join(map(str, sizes))} examples",
                    "time linear (ms per example flat), peak RSS bounded")
    measure(result, args.mode, sizes, args.latency, args.concurrency, args.memo)
    print(json.dumps(result.figures["sizes"], indent=1))
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
