"""Shared helpers: prompt modules and data written into a pytester directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# pytester's in-process runs drop modules first imported inside them, and C extensions
# (numpy under dspy, llama.cpp, scipy for gating, optuna for MIPROv2) cannot be imported
# twice in one process: import them once, before any run.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import dspy  # noqa: F401
import llama_cpp  # noqa: F401  (the test servers run it)
import numpy.fft  # noqa: F401
import optuna  # noqa: F401
import scipy.stats  # noqa: F401
import xllamacpp  # noqa: F401  (the embedded model)
from servers.ollama_stub import serve as serve_ollama
from servers.openai_server import serve as serve_openai

OLLAMA_MODEL = "smollm2:135m"
OPENAI_MODEL = "smollm2"

SENTIMENT_MODULE = '''
from typing import Literal

import dspy


class Sentiment(dspy.Signature):
    """Classify the sentiment of a product review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


program = dspy.Predict(Sentiment)


def metric(example, prediction, trace=None):
    return example.sentiment == prediction.sentiment
'''

SENTIMENT_ROWS = [
    {"review": "I love it, works perfectly", "sentiment": "positive"},
    {"review": "Broke after two days, terrible", "sentiment": "negative"},
    {"review": "Great value and fast shipping", "sentiment": "positive"},
    {"review": "Awful customer service, never again", "sentiment": "negative"},
]

PromptWriter = Callable[..., None]


@pytest.fixture
def write_prompt(pytester: pytest.Pytester) -> PromptWriter:
    """Write ``prompt_<name>.py`` (sentiment task by default) and its JSONL data."""

    def write(
        name: str = "sentiment",
        extra: str = "",
        rows: list[dict[str, str]] | None = SENTIMENT_ROWS,
        module: str = SENTIMENT_MODULE,
    ) -> None:
        pytester.makepyfile(**{f"prompt_{name}": module + extra})
        if rows is not None:
            lines = "\n".join(json.dumps(r) for r in rows)
            (pytester.path / f"prompt_{name}.jsonl").write_text(lines + "\n")

    return write


@pytest.fixture(scope="session")
def openai_url() -> Iterator[str]:
    """Base URL (with /v1) of a real llama_cpp.server serving SmolLM2 as 'smollm2'."""
    with serve_openai(alias=OPENAI_MODEL) as url:
        yield url


@pytest.fixture(scope="session")
def ollama_stub_url() -> Iterator[str]:
    """Base URL of the Ollama API stub serving SmolLM2 as 'smollm2:135m'."""
    with serve_ollama(OLLAMA_MODEL) as url:
        yield url


@pytest.fixture(autouse=True)
def shared_answer_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One answer cache for the session's pytester runs (same prompt, same answer, one model call).

    Tests marked ``fresh_cache`` count model calls and keep the cache in their own directory.
    """
    if request.node.get_closest_marker("fresh_cache") is None:
        monkeypatch.setenv("DSPY_LOCAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "answers"))


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Paths made immutable with ``chattr +i`` in the test; made mutable again afterwards."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def make_immutable(path: Path, made: list[Path]) -> None:
    """``chattr +i path``, undone by the ``immutable`` fixture (skip the test where the file system cannot)."""
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
        pytest.skip("chattr +i is not available on this file system")
    made.append(path)
