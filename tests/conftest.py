"""Shared helpers: prompt modules and data written into a pytester directory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

# pytester's in-process runs drop modules first imported inside them, and numpy (under
# dspy) and llama.cpp cannot be imported twice: import them once, before any run.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import dspy  # noqa: F401
import llama_cpp  # noqa: F401

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
