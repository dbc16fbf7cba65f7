"""Command-line options: one group, one ``--dspy-`` prefix, names as constants."""

from __future__ import annotations

from typing import Any

import pytest

MODEL = "--dspy-model"
BACKEND = "--dspy-backend"
BASE_URL = "--dspy-base-url"
THRESHOLD = "--dspy-threshold"
MAX_EXAMPLES = "--dspy-max-examples"

# option flag -> Settings field; every dest is the field name prefixed with dspy_
SETTING_OPTIONS = {
    MODEL: "model",
    BACKEND: "backend",
    BASE_URL: "base_url",
    THRESHOLD: "threshold",
    MAX_EXAMPLES: "max_examples",
}

_HELP = {
    MODEL: "model to evaluate with: smollm2-135m (embedded default), gguf:PATH, or a server's model name",
    BACKEND: "auto (default), embedded, ollama, openai, or a backend a conftest.py provides",
    BASE_URL: "base URL of an OpenAI-compatible server (ending in /v1) or of Ollama",
    THRESHOLD: "pass mark for prompt modules that set no `threshold` (0..1, default 0.5)",
    MAX_EXAMPLES: "evaluate at most N examples per prompt",
}


def addoption(parser: pytest.Parser) -> None:
    """Register the plugin's options in their own --help group."""
    group = parser.getgroup("dspy-local", "DSPy prompt evaluation on a local model (pytest-dspy-local)")
    for flag, field in SETTING_OPTIONS.items():
        group.addoption(flag, dest=f"dspy_{field}", default=None, metavar=field.upper(), help=_HELP[flag])


def cli_values(config: pytest.Config) -> dict[str, Any]:
    """Settings given on the command line (None where not given)."""
    return {field: config.getoption(f"dspy_{field}") for field in SETTING_OPTIONS.values()}
