"""What the project answer cache saves: `pytest example_project` cold, then unchanged.

Copies example_project to a temporary directory, runs it with an empty answer cache, then
again unchanged, and prints both wall times, their ratio, and the model calls each made
(from the plugin's summary line). Both runs happen in this invocation on this machine.

    .venv/bin/python bench/bench_cache.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
CALLS = re.compile(r"model calls: (\d+) \((\d+) to the model, (\d+) cached\)")


def _run(project: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", str(project), "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, check=True)
    match = CALLS.search(done.stdout)
    return time.perf_counter() - started, match.group(0) if match else "no summary line"


def main() -> None:
    """Print cold and warm wall times and model calls."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "example_project"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__"))
        cold, cold_calls = _run(project)
        warm, warm_calls = _run(project)
    print(f"cold: {cold:.2f}s, {cold_calls}")
    print(f"warm: {warm:.2f}s, {warm_calls}")
    print(f"warm/cold wall-time ratio: {warm / cold:.3f}")


if __name__ == "__main__":
    main()
