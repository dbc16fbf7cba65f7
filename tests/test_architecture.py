"""The layer rule, the one reader of options, and the public API without pytest."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_dspy_local.core.results import RunReport

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_dspy_local"
EXAMPLE = PACKAGE.parent / "example_project"
GOLDEN_REPORT = Path(__file__).parent / "data" / "golden" / "report.json"
# Which layers each layer may import (besides itself, the standard library and third parties).
ALLOWED = {
    "core": {"errors"},
    "privacy": {"errors", "core"},
    "models": {"errors", "core", "privacy"},
    "report": {"errors", "core"},
    "plugin": {"errors", "core", "privacy", "models", "report", "api"},
}
BLOCK_PYTEST = """
import sys

class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, NoPytest())
"""


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pytest_dspy_local" and len(parts) > 1 else None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in _imports(path):
            target = _layer_of(module)
            if target not in (None, layer, *ALLOWED[layer]) and (PACKAGE / target).exists():
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
            if layer != "plugin" and module.split(".")[0] in ("pytest", "_pytest"):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


def test_only_the_options_module_reads_options() -> None:
    readers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "getoption(" in p.read_text())
    assert readers == ["plugin/options.py"]


def test_core_models_and_report_import_and_work_without_pytest(tmp_path: Path) -> None:
    script = BLOCK_PYTEST + textwrap.dedent(f"""
        import dspy
        import pytest_dspy_local.core, pytest_dspy_local.models, pytest_dspy_local.privacy
        import pytest_dspy_local.report.terminal, pytest_dspy_local.report.markdown
        import pytest_dspy_local.report.json_report, pytest_dspy_local.report.html
        from pytest_dspy_local import evaluate, load_program, local_lm

        program = load_program({str(EXAMPLE / "prompts" / "prompt_triage.py")!r})
        rows = [{{"ticket": "I was charged twice for my order", "team": "billing"}},
                {{"ticket": "The app crashes when I open settings", "team": "tech"}}]
        with dspy.context(lm=local_lm(max_tokens=64), adapter=dspy.JSONAdapter()):
            result = evaluate(program, rows, lambda e, p, t=None: e.team == p.team)
        assert "pytest" not in sys.modules
        print("evaluated", result.n, "parse failures", result.parse_failures)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPY_LOCAL_", "PYTEST_"))}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluated 2 parse failures 0" in done.stdout


def test_json_report_round_trips_through_the_typed_results() -> None:
    if not GOLDEN_REPORT.is_file():
        pytest.skip("no golden report recorded")
    document = json.loads(GOLDEN_REPORT.read_text(encoding="utf-8"))
    for prompt in document["prompts"]:
        prompt["seconds"] = 1.25  # the golden file normalizes timings away
    assert RunReport.from_json(document).to_json() == document


def test_bad_allow_hosts_entry_stops_the_run_before_any_item(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.dspy_local]\nallow_hosts = ["gpu-box.lan", "10.0.0.0/33"]\n')
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*allow_hosts: allowed host '10.0.0.0/33': not a valid CIDR network*"])
    assert "test_plain" not in result.stdout.str() and "Traceback" not in result.stderr.str()
