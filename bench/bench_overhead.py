"""Idle overhead: pytest on 500 ordinary tests (no prompt modules) with the plugin vs `-p no:dspy_local`.

The plugin is installed normally, not editable: a wheel is built from this checkout and
installed into a temporary venv whose other packages are the dev venv's (linked, not
copied; the editable install's finder and metadata are left out). Runs come in pairs, one
with and one without the plugin, and a paired estimate is printed (see ``measure``), of wall
time and of the pytest process's CPU time; both sides are measured in the same run on the
same machine. Target: <= 1.02 for the normal install.

pytest rewrites the asserts of an installed plugin's modules and caches the result as
bytecode; with PYTHONDONTWRITEBYTECODE=1 (set on these machines, and in many CI images) it
re-parses them on every run. The installed plugin is measured both ways. The editable dev
install (not rewritten: pytest sees only its path hook) is printed beside them.

    .venv/bin/python bench/bench_overhead.py [--runs 40] [--tests 500]
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Result

# The editable install's pieces in the dev venv; the temporary venv gets the wheel instead.
EDITABLE = ("pytest_dspy_local", "__editable__", "__pycache__")


def make_repo(root: Path, tests: int) -> None:
    """A repo of ordinary tests, and a prompt_*.py that is not a prompt module (no program, no metric)."""
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    body = "\n".join(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n" for i in range(tests))
    (root / "test_plain.py").write_text(body)
    (root / "prompt_templates.py").write_text("TEMPLATE = 'Dear {name}'\n")


def build_wheel(out: Path) -> Path:
    """A wheel of this checkout, built by pip (build isolation: the project's own setuptools pin)."""
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(benchlib.ROOT)]
    subprocess.run(argv, check=True, capture_output=True)
    return next(out.glob("pytest_dspy_local-*.whl"))


def installed_venv(root: Path, wheel: Path) -> str:
    """A venv with the wheel installed and the dev venv's other packages linked in; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = str(root / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(EDITABLE) and not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    return python


def trimmed_geomean(ratios: list[float], trim: float = 0.2) -> float:
    """The geometric mean of ``ratios`` without the lowest and highest ``trim`` of them."""
    logs = sorted(math.log(r) for r in ratios)
    cut = int(len(logs) * trim)
    return math.exp(statistics.fmean(logs[cut:len(logs) - cut]))


def measure(python: str, repo: Path, runs: int, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Figures and ratios of ``runs`` pairs of runs with and without the plugin.

    Each pair runs both sides back to back, and the estimate is built from the per-pair ratios:
    a shared machine's speed drifts by far more than the plugin costs (single runs spread over
    10-20 %, and 15 runs a side gave ratios of medians from 0.97 to 1.05 for the same code),
    and a pair sees the same drift on both sides. Which side runs first alternates (the second
    run of a pair tends to be a little faster, which the balanced orders cancel), and the
    estimate is the geometric mean of the pair ratios with the lowest and highest fifth left
    out (a run disturbed by other work). CPU seconds (user + system of the pytest process) are
    reported beside wall time; the medians of each side and the quartiles of the pair ratios
    are in the figures.
    """
    pairs: list[tuple[benchlib.Run, benchlib.Run]] = []
    benchlib.pytest(["-q"], repo, python, env=env)  # warm the file cache (and write bytecode, if it is written)
    for i in range(runs):
        if i % 2 == 0:
            with_plugin = benchlib.pytest(["-q"], repo, python, env=env)
        without = benchlib.pytest(["-q", "-p", "no:dspy_local"], repo, python, env=env)
        if i % 2 == 1:
            with_plugin = benchlib.pytest(["-q"], repo, python, env=env)
        pairs.append((with_plugin, without))

    figures: dict[str, Any] = {"pairs": runs}
    ratios = {}
    for metric, label in (("wall", "wall"), ("cpu", "CPU")):
        paired = [getattr(a, metric) / getattr(b, metric) for a, b in pairs]
        with_s = statistics.median(getattr(a, metric) for a, _ in pairs)
        without_s = statistics.median(getattr(b, metric) for _, b in pairs)
        figures[f"median {label} s, with / without plugin"] = [round(with_s, 4), round(without_s, 4)]
        figures[f"ratio of medians, {label}"] = round(with_s / without_s, 4)
        figures[f"pair ratio quartiles, {label}"] = [round(q, 4) for q in statistics.quantiles(paired, n=4)]
        ratios[f"paired, {label}"] = trimmed_geomean(paired)
    return figures, ratios


def check_installed(python: str, repo: Path) -> str:
    """Where the temporary venv imports the plugin from (must be its own site-packages)."""
    code = "import pytest_dspy_local.plugin.hooks as h; print(h.__file__)"
    return subprocess.run([python, "-c", code], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    """Print the ratios of runs with and without the plugin, for each install."""
    p = benchlib.parser(__doc__)
    p.add_argument("--runs", type=int, default=40, help="pairs of runs per install")
    p.add_argument("--tests", type=int, default=500)
    args = p.parse_args()
    result = Result("idle overhead", f"{args.tests} plain tests: plugin installed from a wheel vs -p no:dspy_local",
                    "<= 1.02")
    with benchlib.workdir("idle") as tmp:
        repo = tmp / "repo"
        repo.mkdir()
        make_repo(repo, args.tests)
        python = installed_venv(tmp / "venv", build_wheel(tmp / "wheel"))
        result.figures["plugin imported from"] = check_installed(python, repo)
        written, unwritten = benchlib.bench_env(), {**benchlib.bench_env(), "PYTHONDONTWRITEBYTECODE": "1"}
        modes = (("installed", python, written), ("installed, bytecode not written", python, unwritten),
                 ("editable", sys.executable, written))
        for label, interpreter, env in modes:
            figures, ratios = measure(interpreter, repo, args.runs, env)
            result.figures[label] = figures
            result.ratios.update({f"{label}: with/without plugin, {k}": v for k, v in ratios.items()})
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
