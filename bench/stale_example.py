"""Stale-only re-optimization on example_project (issue 10's done-when), on the embedded model.

Copies example_project to a temporary directory with no answer cache, then runs:

1. ``pytest --optimize``: MIPROv2 on both prompts; every snapshot records its provenance.
2. ``pytest --optimize=stale``: expected to say "fresh" for both prompts, run no optimizer
   and make no call to the model (every answer is cached).
3. One row appended to ``prompts/prompt_triage.jsonl``, then ``pytest --optimize=stale``
   again: expected to optimize ``triage`` only, naming the reason.

Prints each run's wall time and its dspy-local summary, then each check and whether it held;
exits 1 if one did not. A few minutes on 2 cores (the first run is a cold MIPROv2 run).

    .venv/bin/python bench/stale_example.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
CALLS = re.compile(r"model calls: (\d+) \((\d+) to the model, (\d+) cached\)")
NEW_ROW = {"ticket": "My invoice shows a charge for a plan I never signed up for.", "team": "billing"}


def run(project: Path, *args: str) -> tuple[int, str]:
    """``pytest <project> -q ...``: print its wall time and dspy-local summary; return exit code and output."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", str(project), "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    print(f"$ pytest {' '.join(args)}  ->  exit {done.returncode}, {seconds:.1f}s")
    lines = done.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if "= dspy-local =" in line), len(lines))
    print("\n".join(f"    {line}" for line in lines[start + 1:] if not line.startswith("=")))
    return done.returncode, done.stdout


def to_model(output: str) -> int:
    """Calls that reached the model, from the summary line (-1 when there is none)."""
    match = CALLS.search(output)
    return int(match.group(2)) if match else -1


def optimized(output: str, name: str) -> bool:
    """Did the run optimize prompt ``name`` (its progress lines)?"""
    return f"dspy-local optimize {name}:" in output


def main() -> int:
    """Run the three steps and check each."""
    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "example_project"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__", ".ruff_cache"))
        status, _ = run(project, "--optimize")
        checks.append(("--optimize passes", status == 0))
        status, second = run(project, "--optimize=stale")
        checks += [
            ("--optimize=stale passes, fresh for both", status == 0 and second.count("  fresh: not re-optimized") == 2),
            ("--optimize=stale: no optimizer ran", not (optimized(second, "triage") or optimized(second, "order_id"))),
            ("--optimize=stale: no call to the model", to_model(second) == 0),
        ]
        with (project / "prompts" / "prompt_triage.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(NEW_ROW) + "\n")
        status, third = run(project, "--optimize=stale")
        checks += [
            ("after a row added: triage optimized, reason named",
             status == 0 and optimized(third, "triage") and "  stale (data changed: 1 row added): optimized" in third),
            ("after a row added: order_id not optimized", not optimized(third, "order_id")
             and "  fresh: not re-optimized" in third),
        ]
    for name, held in checks:
        print(f"{'ok  ' if held else 'FAIL'} {name}")
    return 0 if all(held for _, held in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
