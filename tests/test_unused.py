"""A repo without prompt modules pays (almost) nothing for the plugin.

DSPy, LiteLLM and llama.cpp (the embedded engine's xllamacpp, the test servers' llama_cpp) stay
unimported; a project that configures nothing does not even read its settings (plugin/startup.py):
the run state is made when a prompt module or snapshot file turns up, and is then the same as one
made at configure.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import PromptWriter

RECORD_IMPORTS = '''
import sys

def pytest_unconfigure(config):
    heavy = sorted(m for m in ("dspy", "litellm", "llama_cpp", "xllamacpp") if m in sys.modules)
    ours = sorted(m for m in sys.modules if m.startswith("pytest_dspy_local"))
    with open("imported.json", "w") as handle:
        handle.write(__import__("json").dumps({"heavy": heavy, "ours": ours}))
'''
# What a run that configures nothing and meets no prompt module imports of the plugin.
START_UP = ["pytest_dspy_local", "pytest_dspy_local.core", "pytest_dspy_local.core.declared",
            "pytest_dspy_local.core.defaults", "pytest_dspy_local.plugin", "pytest_dspy_local.plugin.hooks",
            "pytest_dspy_local.plugin.hookspecs", "pytest_dspy_local.plugin.options",
            "pytest_dspy_local.plugin.startup"]


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DSPY_LOCAL_* or OLLAMA_HOST variable (the suite's shared cache sets one)."""
    for name in os.environ:
        if name.startswith("DSPY_LOCAL_") or name == "OLLAMA_HOST":
            monkeypatch.delenv(name)


def imported(pytester: pytest.Pytester) -> dict[str, list[str]]:
    data: dict[str, list[str]] = json.loads((pytester.path / "imported.json").read_text())
    return data


@pytest.mark.fresh_cache
def test_fifty_ordinary_tests_import_only_the_start_up_modules(pytester: pytest.Pytester, unconfigured: None) -> None:
    pytester.makeconftest(RECORD_IMPORTS)
    pytester.makepyfile(test_plain="\n".join(f"def test_{i}():\n    assert {i} == {i}\n" for i in range(50)))
    pytester.makepyfile(prompt_templates="TEMPLATE = 'Dear {name}'\n")
    result = pytester.runpytest_subprocess("-p", "dspy_local", "-v")
    result.assert_outcomes(passed=50)
    assert imported(pytester) == {"heavy": [], "ours": START_UP}
    result.stdout.fnmatch_lines(["dspy-local: backend embedded, model smollm2-135m",
                                 "dspy-local: not a prompt module: *prompt_templates.py (defines neither*"])


@pytest.mark.fresh_cache
@pytest.mark.parametrize("how", ["pyproject", "environment", "flag"])
def test_a_configured_project_reads_its_settings_at_configure(
    pytester: pytest.Pytester, unconfigured: None, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pytester.makeconftest(RECORD_IMPORTS)
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    args = ["-p", "dspy_local"]
    if how == "pyproject":
        pytester.makepyprojecttoml("[tool.dspy_local]\nthreshold = 2\n")
    elif how == "environment":
        monkeypatch.setenv("DSPY_LOCAL_THRESHOLD", "2")
    else:
        args.append("--dspy-threshold=2")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # before any test ran
    assert "must be between 0 and 1 (a mean metric), got" in result.stderr.str()
    assert "test_plain" not in result.stdout.str()


@pytest.mark.fresh_cache
def test_an_unconfigured_project_gets_its_state_when_a_prompt_module_turns_up(
    pytester: pytest.Pytester, write_prompt: PromptWriter, unconfigured: None
) -> None:
    pytester.makeconftest(RECORD_IMPORTS)
    write_prompt(extra="threshold = 0.4\n")
    result = pytester.runpytest_subprocess("-p", "dspy_local")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dspy-local: backend embedded, model smollm2-135m",
                                 "dspy-local model: SmolLM2-135M-Instruct.Q4_1.gguf sha256:* (embedded, in-process)",
                                 "sentiment: 0.500 >= 0.400 on 4 examples (0 parse failures) ok*"])
    assert "pytest_dspy_local.plugin.state" in imported(pytester)["ours"]
    assert (pytester.path / ".dspy_cache").is_dir(), "the default answer cache was used"


@pytest.mark.fresh_cache
def test_an_unconfigured_project_still_reports_unused_snapshot_files(
    pytester: pytest.Pytester, unconfigured: None
) -> None:
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    snapshots = pytester.mkdir("__prompt_snapshots__")
    (snapshots / "prompt_gone.baseline.json").write_text("{}\n")
    result = pytester.runpytest_subprocess("-p", "dspy_local")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["1 snapshot file(s) unused (their prompt module is gone)*",
                                 "  *__prompt_snapshots__/prompt_gone.baseline.json"])
    failed = pytester.runpytest_subprocess("-p", "dspy_local", "--dspy-strict-snapshots")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
