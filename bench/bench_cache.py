"""Warm re-run: `pytest example_project` cold, then again unchanged with the answer cache warm.

Copies example_project to a temporary directory, runs it with an empty answer cache, then
again, and prints both wall times, their ratio, and the model calls each made (from the
plugin's summary line). Both runs happen in this invocation on this machine, on the
embedded model. Target: 0 model calls and wall <= 0.1x cold on the warm run.

With ``--optimize`` both runs are ``pytest --optimize`` from no snapshots (the first run's
snapshots are removed before the second), and it also says whether the second run wrote
byte-identical snapshots.

    .venv/bin/python bench/bench_cache.py [--optimize]
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import benchlib
from benchlib import Result

SNAPSHOTS = "prompts/__prompt_snapshots__"
CALLS = re.compile(r"model calls: (\d+) \((\d+) to the model, (\d+) cached\)")


def copy_example(tmp: Path) -> Path:
    """example_project without its answer cache."""
    project = tmp / "example_project"
    ignore = shutil.ignore_patterns(".dspy_cache", "__pycache__", ".pytest_cache")
    shutil.copytree(benchlib.EXAMPLE, project, ignore=ignore)
    return project


def timed(project: Path, extra: list[str]) -> tuple[float, str, int | None]:
    """Wall time, the summary line and the calls that reached the model."""
    done = benchlib.pytest([str(project), "-q", *extra], project)
    match = CALLS.search(done.output)
    return done.wall, match.group(0) if match else "no summary line", int(match.group(2)) if match else None


def snapshots(project: Path) -> dict[str, bytes]:
    """The snapshot files by name."""
    folder = project / SNAPSHOTS
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def main() -> None:
    """Print cold and warm wall times and model calls."""
    p = benchlib.parser(__doc__)
    p.add_argument("--optimize", action="store_true", help="measure `pytest --optimize` instead")
    args = p.parse_args()
    extra = ["--optimize"] if args.optimize else []
    name = "warm re-run" + (" (--optimize)" if args.optimize else "")
    result = Result(name, "example_project cold vs unchanged second run", "0 model calls, wall <= 0.1x cold")
    with benchlib.workdir("cache") as tmp:
        project = copy_example(tmp)
        if args.optimize:
            shutil.rmtree(project / SNAPSHOTS)
        cold, cold_line, _ = timed(project, extra)
        first = snapshots(project)
        if args.optimize:
            shutil.rmtree(project / SNAPSHOTS)
        warm, warm_line, warm_calls = timed(project, extra)
        same = snapshots(project) == first
    result.figures.update(cold_s=round(cold, 3), cold=cold_line, warm_s=round(warm, 3), warm=warm_line,
                          warm_model_calls=warm_calls)  # fmt: skip
    result.ratios["warm/cold wall time"] = warm / cold
    if args.optimize:
        result.figures["snapshots byte-identical"] = same
    print(f"cold: {cold:.2f}s, {cold_line}\nwarm: {warm:.2f}s, {warm_line}")
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
