"""Optimize wall time: `pytest --optimize` of example_project on a latency-bound server at concurrency 8 vs 1.

The server is tests/servers/latency_server.py (real SmolLM2 answers, memoized, then a
fixed latency per answer, served concurrently). A first pass at concurrency 1 with no
latency fills the memo; then each measured run starts from a fresh copy of
example_project (no snapshots, empty answer cache) with the same seed, at
``--dspy-concurrency`` 1 and 8. It reports the wall-time ratio, the requests and in-flight
maximum of each run, how many requests the concurrent run made that the serial one never
did (memo misses: the runs asked different questions), and whether the two runs wrote
byte-identical snapshots. Target: report the ratio; same snapshots.

    .venv/bin/python bench/bench_optimize.py [--latency 0.3] [--memo PATH] [-k triage]
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import benchlib
from benchlib import OptionMissing, Result, concurrency_args, ratio

SNAPSHOTS = "prompts/__prompt_snapshots__"


def fresh_copy(tmp: Path, name: str) -> Path:
    """example_project without snapshots or answer cache."""
    project = tmp / name
    shutil.copytree(benchlib.EXAMPLE, project, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__"))
    shutil.rmtree(project / SNAPSHOTS)
    return project


def snapshots(project: Path) -> dict[str, bytes]:
    """The snapshot files the run wrote, by name."""
    folder = project / SNAPSHOTS
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def optimize(server: Any, project: Path, concurrency: int | None, select: list[str]) -> dict[str, Any]:
    """One ``pytest --optimize`` run: wall time, server stats, snapshots."""
    server.reset_stats()
    args = ["-q", "--optimize", "--dspy-backend=openai", f"--dspy-base-url={server.base_url}",
            f"--dspy-model={benchlib.ALIAS}", *select, *concurrency_args(concurrency)]  # fmt: skip
    done = benchlib.pytest(args, project, timeout=1800)
    return {"wall": done.wall, "stats": server.stats(), "snapshots": snapshots(project), "rc": done.returncode}


def measure(result: Result, latency: float, memo: Path | None, select: list[str]) -> None:
    """Prime at concurrency 1, then time concurrency 1 and 8 from fresh copies."""
    benchlib.sys_path_for_servers()
    from servers.latency_server import serve

    with benchlib.workdir("optimize") as tmp, serve(latency, memo=memo) as server:
        with server.warming():
            prime = run_level(server, tmp, 1, select, [], "prime")
        serial = run_level(server, tmp, 1, select, result.notes)
        try:
            parallel: dict[str, Any] | None = optimize(server, fresh_copy(tmp, "c8"), 8, select)
        except OptionMissing as exc:
            result.notes.append(f"concurrency 8: not available ({exc})")
            parallel = None
    result.figures["prime"] = summary(prime)
    result.figures["concurrency 1"] = summary(serial)
    result.figures["concurrency 8"] = summary(parallel) if parallel else None
    result.ratios["wall time 1 / 8"] = ratio(serial["wall"], parallel["wall"] if parallel else None)
    result.figures["snapshots identical 1 vs prime"] = serial["snapshots"] == prime["snapshots"]
    if parallel:
        result.figures["snapshots identical 8 vs 1"] = parallel["snapshots"] == serial["snapshots"]
        result.figures["differing snapshot files"] = sorted(
            name for name in set(serial["snapshots"]) | set(parallel["snapshots"])
            if serial["snapshots"].get(name) != parallel["snapshots"].get(name))


def run_level(server: Any, tmp: Path, concurrency: int, select: list[str], notes: list[str],
              name: str = "") -> dict[str, Any]:
    """The run at ``concurrency``; without the option, the plugin's serial run stands in for 1."""
    name = name or f"c{concurrency}"
    try:
        return optimize(server, fresh_copy(tmp, name), concurrency, select)
    except OptionMissing:
        notes.append("concurrency 1: measured without the flag (the plugin without --dspy-concurrency is serial)")
        return optimize(server, fresh_copy(tmp, f"{name}-noflag"), None, select)


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run worth keeping."""
    stats = run["stats"]
    return {"wall_s": round(run["wall"], 2), "exit_code": run["rc"], "requests": stats["requests"],
            "memo_misses": stats["model_calls"], "max_in_flight": stats["max_in_flight"],
            "snapshot_files": sorted(run["snapshots"])}  # fmt: skip


def main() -> None:
    """Measure and report."""
    p = benchlib.server_parser(__doc__, latency=0.3)
    p.add_argument("-k", dest="keyword", default=None, help="optimize only the prompts pytest -k selects")
    args = p.parse_args()
    select = ["-k", args.keyword] if args.keyword else []
    result = Result("optimize wall time", "pytest --optimize of example_project at concurrency 8 vs 1, same seed",
                    "report the ratio; same snapshots")
    result.figures["latency"] = args.latency
    measure(result, args.latency, args.memo, select)
    if result.ratios["wall time 1 / 8"] is None:
        result.status = "partial"
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
