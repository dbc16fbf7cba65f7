"""Plugin overhead on a repo with no prompt modules.

Times `pytest` on 50 ordinary tests with the plugin loaded and with it disabled
(`-p no:dspy_local`), alternating runs, and prints the ratio of medians. Both
sides are measured in the same run on the same machine, so the ratio holds even
when the machine is busy.

    .venv/bin/python bench/bench_overhead.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _make_repo(root: Path) -> None:
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    body = "\n".join(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n" for i in range(50))
    (root / "test_plain.py").write_text(body)
    (root / "prompt_templates.py").write_text("TEMPLATE = 'Dear {name}'\n")


def _time(root: Path, extra: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra], cwd=root,
                   check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    """Print median wall time with and without the plugin, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _make_repo(root)
        _time(root, [])  # warm the file cache
        with_plugin, without = [], []
        for _ in range(runs):
            with_plugin.append(_time(root, []))
            without.append(_time(root, ["-p", "no:dspy_local"]))
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"50 plain tests, {runs} runs each: with plugin {a:.3f}s, without {b:.3f}s, ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
