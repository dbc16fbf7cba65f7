"""The plugin's own hooks and the fixtures for hand-written evaluation tests."""

from __future__ import annotations

import pytest
from conftest import PromptWriter

COUNTING_BACKEND = '''
import pytest
from pytest_dspy_local.models.backends.embedded import EmbeddedBackend

CALLS = []


class CountingBackend(EmbeddedBackend):
    """The real embedded model, under a backend name of its own."""

    def chat(self, request):
        CALLS.append(request)
        return super().chat(request)


def pytest_dspy_local_make_backend(name, settings):
    if name == "counting":
        return CountingBackend("smollm2-135m")
    return None


def pytest_dspy_local_prompt_result(item, result):
    item.config._dspy_seen = (item.name, result.n, len(CALLS))


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line(f"seen by hook: {config._dspy_seen}")
'''


@pytest.mark.fresh_cache
def test_conftest_can_add_a_backend_and_see_results(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.4\n")
    pytester.makeconftest(COUNTING_BACKEND)
    result = pytester.runpytest("--dspy-backend=counting")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dspy-local: backend counting*", "seen by hook: ('sentiment', 4, 4)"])


HAND_WRITTEN = '''
from typing import Literal

import dspy

from pytest_dspy_local import evaluate


class Sentiment(dspy.Signature):
    """Classify the sentiment of a product review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


def test_single_call(dspy_lm):
    prediction = dspy.Predict(Sentiment)(review="I love it")
    assert prediction.sentiment in ("positive", "negative")
    assert dspy_lm.history, "the call went through the configured LM"


def test_evaluate_helper(dspy_lm):
    data = [{"review": "I love it", "sentiment": "positive"}, {"review": "Awful", "sentiment": "negative"}]
    result = evaluate(dspy.Predict(Sentiment), data, lambda e, p, trace=None: e.sentiment == p.sentiment)
    assert result.n == 2 and result.parse_failures == 0
    assert result.score == 0.5
'''


def test_dspy_lm_fixture_and_evaluate_helper(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_by_hand=HAND_WRITTEN)
    pytester.runpytest().assert_outcomes(passed=2)


def test_dspy_lm_fixture_reports_a_bad_model_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_by_hand="def test_x(dspy_lm):\n    pass\n")
    result = pytester.runpytest("--dspy-model=gguf:/missing.gguf")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--dspy-model: GGUF file /missing.gguf does not exist*"])
