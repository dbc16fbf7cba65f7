"""Issue 11: `pytest -n 2 example_project` writes one merged set of reports, equal to a serial run's.

One serial run and one `-n 2` run of example_project on the embedded model, each in its own copy
with its own empty answer cache, started at the same time. Both ask the model every question, so
the `-n 2` receipt has real calls to count, made in two llama.cpp worker processes the controller
never sees. At temperature 0 both runs get the same answers (measured: byte-equal reports).

`--dist loadfile --no-loadscope-reorder` puts each prompt module on its own worker. xdist's default
`load` schedule sends its first chunk of at least two items, both prompts, to one worker; `loadfile`
by default starts with the largest file (tests/test_text.py) and again gives one worker both prompts.
Either way the other worker would hand over nothing, and the merge would go untested.

What is normalized, and why (nothing else; no worker id reaches any report):
- JSON, HTML, Markdown: tests/golden.py's normalizers (each prompt's wall-clock seconds; the
  project's path, which differs between the two copies).
- JUnit XML: suite and case `time`, suite `timestamp` (wall clock), and case order (xdist writes
  cases in the order workers finish them).
- Audit receipt: its `listeners` (the embedded engine's loopback listener, a random port, one
  per process that ran the model: one serial, one per worker under `-n 2`) become the distinct
  (opened_by, protection) pairs; their number is checked in the receipt test.
- Terminal `dspy-local` section: golden.terminal (each prompt's `[seconds]`).
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import golden
import pytest
from test_example_project import EXAMPLE, run

Run = tuple[Path, subprocess.CompletedProcess[str]]
MODES = {"serial": (), "xdist": ("-n", "2", "--dist", "loadfile", "--no-loadscope-reorder")}
PROMPT_CALLS = 48  # 24 examples in each of the two prompt modules, one model call each


def _copy(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Path:
    """A copy of example_project with no answer cache."""
    target = tmp_path_factory.mktemp(mode) / "example_project"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__", ".pytest_cache"))
    return target


def _run_with_reports(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pytest <project> -v` writing every report the plugin writes, and JUnit XML."""
    return run(project, "-v", *args, f"--junitxml={project / 'j.xml'}", f"--dspy-json={project / 'r.json'}",
               f"--dspy-report={project / 'r.html'}", f"--dspy-audit={project / 'a.json'}",
               env={"GITHUB_STEP_SUMMARY": str(project / golden.STEP_SUMMARY)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The serial and the `-n 2` run, side by side (three llama.cpp processes on two cores)."""
    projects = {mode: _copy(tmp_path_factory, mode) for mode in MODES}
    with ThreadPoolExecutor(len(MODES)) as pool:
        futures = {mode: pool.submit(_run_with_reports, projects[mode], *args) for mode, args in MODES.items()}
    return {mode: (projects[mode], future.result()) for mode, future in futures.items()}


def _junit(text: str, project: str) -> str:
    """JUnit XML without wall-clock attributes, its test cases sorted by class name and name."""
    root = ET.fromstring(text.replace(project, golden.PROJECT))
    for suite in root.iter("testsuite"):
        suite.attrib.pop("time", None)
        suite.attrib.pop("timestamp", None)
        cases = suite.findall("testcase")
        for case in cases:
            suite.remove(case)
            case.attrib.pop("time", None)
        suite.extend(sorted(cases, key=lambda c: (c.get("classname", ""), c.get("name", ""))))
    return ET.tostring(root, encoding="unicode")


def _section(stdout: str, project: str) -> str:
    """The terminal's `dspy-local` section (per-prompt lines and the model-call count)."""
    match = re.search(r"^=+ dspy-local =+\n(.*?)^=+ ", stdout, flags=re.M | re.S)
    assert match, stdout[-3000:]
    return golden.terminal(match[1], project)


def _receipt(text: str, project: str) -> str:
    """The receipt, its listeners reduced to who opened them and how they are protected."""
    document = json.loads(text)
    kinds = {(entry["opened_by"], entry["protection"]) for entry in document["listeners"]}
    document["listeners"] = sorted(kinds)
    return json.dumps(document, indent=2, sort_keys=True)


NORMALIZED: dict[str, Callable[[str, str], str]] = {
    "j.xml": _junit, "r.json": golden.report_json, "r.html": golden.report_html,
    golden.STEP_SUMMARY: golden.summary_md, "a.json": _receipt,
}


def _diff(name: str, serial: str, xdist: str) -> str:
    lines = difflib.unified_diff(serial.splitlines(keepends=True), xdist.splitlines(keepends=True),
                                 f"serial {name}", f"-n 2 {name}")
    return f"{name} under -n 2 differs from the serial run's (normalized)\n" + "".join(lines)


def test_both_runs_pass_with_each_prompt_on_its_own_worker(runs: dict[str, Run]) -> None:
    for _, result in runs.values():
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    xdist = runs["xdist"][1].stdout
    assert "2 workers [24 items]" in xdist
    workers = dict(re.findall(r"^\[(gw\d)\] \[ *\d+%\] PASSED \(score .*? (\S+::\w+)\s*$", xdist, flags=re.M))
    assert sorted(workers) == ["gw0", "gw1"], workers


def test_merged_receipt_counts_every_worker_s_model_calls(runs: dict[str, Run]) -> None:
    """Both runs start cold, so the receipts compare real calls, not cache hits."""
    for mode, (project, _) in runs.items():
        receipt = json.loads((project / "a.json").read_text())
        totals = receipt["totals"]
        assert (totals["model_calls"], totals["cached_answers"]) == (PROMPT_CALLS, 0)
        assert totals["endpoints"] == ["in-process"]
        # Each process that ran the model opened a listener; the workers' reach the controller.
        assert len({entry["address"] for entry in receipt["listeners"]}) == (2 if mode == "xdist" else 1)


@pytest.mark.parametrize("name", [*NORMALIZED, "terminal"])
def test_xdist_report_equals_the_serial_one(name: str, runs: dict[str, Run]) -> None:
    texts = []
    for project, result in runs.values():
        raw = result.stdout if name == "terminal" else (project / name).read_bytes().decode()
        texts.append((_section if name == "terminal" else NORMALIZED[name])(raw, str(project)))
    if texts[0] != texts[1]:
        pytest.fail(_diff(name, *texts), pytrace=False)


def test_the_model_line_is_shown_under_xdist_too(runs: dict[str, Run]) -> None:
    """The controller collects nothing itself; it names the model once a worker has collected a prompt."""
    lines = {mode: [line for line in result.stdout.splitlines() if line.startswith("dspy-local model: ")]
             for mode, (_, result) in runs.items()}
    assert len(lines["serial"]) == 1 and lines["serial"][0].endswith("(embedded, in-process)")
    assert lines["xdist"] == lines["serial"]
