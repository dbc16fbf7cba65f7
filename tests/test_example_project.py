"""The main job: `pytest example_project` on the embedded model, with every report, twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import golden
import pytest
from browser import open_page
from test_html_report import check_history_plots

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of example_project with no answer cache."""
    target = tmp_path_factory.mktemp("example") / "example_project"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__", ".pytest_cache"))
    return target


def run(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`pytest <project> ...` in a fresh interpreter, as a user runs it (cache in the project), plus `env`."""
    # A CI job's own step summary must not receive the example project's.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DSPY_LOCAL_") and k != "GITHUB_STEP_SUMMARY"}
    return subprocess.run([sys.executable, "-m", "pytest", str(project), "-p", "no:cacheprovider", *args],
                          cwd=project.parent, capture_output=True, text=True, timeout=900,
                          env=inherited | (env or {}), check=False)


@pytest.fixture(scope="module")
def first_run(project: Path) -> subprocess.CompletedProcess[str]:
    """The first run, writing JUnit XML, JSON, HTML, the audit receipt and the GitHub step summary."""
    return run(project, "-v", f"--junitxml={project / 'j.xml'}", f"--dspy-json={project / 'r.json'}",
               f"--dspy-report={project / 'r.html'}", f"--dspy-audit={project / 'a.json'}",
               env={"GITHUB_STEP_SUMMARY": str(project / golden.STEP_SUMMARY)})


@pytest.fixture(scope="module")
def outputs(project: Path, first_run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The first run's terminal, JSON, Markdown and HTML output, normalized by tests/golden.py."""
    return golden.normalized(first_run.stdout, project)


def test_main_job_passes_naming_the_model(first_run: subprocess.CompletedProcess[str]) -> None:
    assert first_run.returncode == 0, first_run.stdout[-3000:]
    out = first_run.stdout
    assert "dspy-local: backend embedded, model smollm2-135m" in out
    assert re.search(r"dspy-local model: SmolLM2-135M-Instruct\.Q4_1\.gguf sha256:[0-9a-f]{12} ", out)
    assert len(re.findall(r"prompt_\w+\.py::\w+ PASSED \(score", out)) >= 2


def test_reports_are_written(project: Path, first_run: subprocess.CompletedProcess[str]) -> None:
    suites = ET.parse(project / "j.xml")
    prompt_cases = [c for c in suites.iter("testcase") if c.get("classname", "").endswith(("prompt_triage",
                                                                                          "prompt_order_id"))]
    assert len(prompt_cases) == 2
    for case in prompt_cases:
        assert {p.get("name") for p in case.iter("property")} >= {"dspy_score", "dspy_threshold", "dspy_n"}
    report = json.loads((project / "r.json").read_text())
    assert report["schema"] == "pytest-dspy-local/report" and report["totals"]["prompts"] == 2
    parsed = sum(p["n"] - p["parse_failures"] for p in report["prompts"]) / sum(p["n"] for p in report["prompts"])
    errors = [e["error"] for p in report["prompts"] for e in p["examples"] if e["error"]]
    # Constrained decoding always parses: the only failures are answers the model rambled past max_tokens.
    assert all("cut off at max_tokens" in e for e in errors), errors
    assert parsed >= 0.95
    html = (project / "r.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", html) and "url(" not in html


@pytest.mark.parametrize("name", sorted(golden.NORMALIZERS))
def test_outputs_equal_the_goldens(name: str, outputs: dict[str, str]) -> None:
    if os.environ.get(golden.UPDATE_ENV):
        golden.write({name: outputs[name]})
    expected = (golden.GOLDEN_DIR / name).read_bytes().decode()
    if outputs[name] != expected:
        pytest.fail(golden.failure(name, expected, outputs[name]), pytrace=False)


def test_audit_lists_only_the_in_process_model(project: Path, first_run: subprocess.CompletedProcess[str]) -> None:
    receipt = json.loads((project / "a.json").read_text())
    assert receipt["totals"]["endpoints"] == ["in-process"]
    assert receipt["totals"]["blocked_attempts"] == 0


def test_unchanged_rerun_makes_no_model_calls(project: Path, first_run: subprocess.CompletedProcess[str]) -> None:
    again = run(project)
    assert again.returncode == 0, again.stdout[-3000:]
    assert re.search(r"model calls: (\d+) \(0 to the model, \1 cached\)", again.stdout)


def test_html_report_renders_offline_in_chromium(
    project: Path, first_run: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    with open_page(project / "r.html", tmp_path / "profile") as (page, requests):
        page.screenshot(path=str(tmp_path / "r.png"), full_page=True)
        check_history_plots(page, [(2, 1), (2, 1)])  # each prompt: its stored baseline and this run
    assert requests == [(project / "r.html").as_uri()]
    assert (tmp_path / "r.png").stat().st_size > 20_000
