"""What the project answer cache saves: `pytest example_project` cold, then again with the cache warm.

Copies example_project to a temporary directory, runs it with an empty answer cache, then
again, and prints both wall times, their ratio, and the model calls each made (from the
plugin's summary line). Both runs happen in this invocation on this machine.

With ``--optimize`` both runs are ``pytest --optimize`` from no snapshots (the first run's
snapshots are removed before the second), and it also says whether the second run wrote
byte-identical snapshots.

    .venv/bin/python bench/bench_cache.py [--optimize]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
SNAPSHOTS = "prompts/__prompt_snapshots__"
CALLS = re.compile(r"model calls: (\d+) \((\d+) to the model, (\d+) cached\)")


def _run(project: Path, extra: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", str(project), "-q", "-p", "no:cacheprovider", *extra],
                          capture_output=True, text=True, check=True)
    match = CALLS.search(done.stdout)
    return time.perf_counter() - started, match.group(0) if match else "no summary line"


def _snapshots(project: Path) -> dict[str, bytes]:
    folder = project / SNAPSHOTS
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def main() -> None:
    """Print cold and warm wall times and model calls."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--optimize", action="store_true", help="measure `pytest --optimize` instead")
    optimize = parser.parse_args().optimize
    extra = ["--optimize"] if optimize else []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "example_project"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__"))
        if optimize:
            shutil.rmtree(project / SNAPSHOTS)
        cold, cold_calls = _run(project, extra)
        first = _snapshots(project)
        if optimize:
            shutil.rmtree(project / SNAPSHOTS)
        warm, warm_calls = _run(project, extra)
        same = _snapshots(project) == first
    print(f"cold: {cold:.2f}s, {cold_calls}")
    print(f"warm: {warm:.2f}s, {warm_calls}")
    print(f"warm/cold wall-time ratio: {warm / cold:.3f}")
    if optimize:
        print(f"snapshots byte-identical across the two runs: {same}")


if __name__ == "__main__":
    main()
