"""A repo without prompt modules pays nothing: DSPy, LiteLLM and llama.cpp stay unimported."""

from __future__ import annotations

import pytest

RECORD_IMPORTS = '''
import sys

def pytest_unconfigure(config):
    heavy = sorted(m for m in ("dspy", "litellm", "llama_cpp") if m in sys.modules)
    with open("imported.txt", "w") as handle:
        handle.write(",".join(heavy) or "none")
'''


def test_fifty_ordinary_tests_import_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORD_IMPORTS)
    pytester.makepyfile(test_plain="\n".join(f"def test_{i}():\n    assert {i} == {i}\n" for i in range(50)))
    pytester.makepyfile(prompt_templates="TEMPLATE = 'Dear {name}'\n")
    result = pytester.runpytest_subprocess("-p", "dspy_local")
    result.assert_outcomes(passed=50)
    assert (pytester.path / "imported.txt").read_text() == "none"
    assert "dspy-local: backend embedded" in result.stdout.str(), "the plugin was loaded"
