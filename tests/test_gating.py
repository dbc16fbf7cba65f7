"""Regression gating against the stored baseline: statistics, and end to end on the real model."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from pytest_dspy_local.core.gating import compare
from pytest_dspy_local.plugin.options import HTML_REPORT, JSON_REPORT, REPEATS, UPDATE_BASELINE


def _scores(values: list[float]) -> dict[str, tuple[str, float]]:
    return {f"id{i}": (f"data.jsonl:{i + 1}", v) for i, v in enumerate(values)}


def test_five_of_forty_flips_is_a_significant_drop() -> None:
    before = [1.0] * 30 + [0.0] * 10
    after = [0.0] * 5 + [1.0] * 25 + [0.0] * 10
    result = compare(_scores(after), _scores(before), alpha=0.05, min_delta=0.0)
    assert result is not None
    assert result.test == "McNemar exact (one-sided)"
    assert result.p_value == pytest.approx(0.5**5)  # binomial(5 of 5 discordant, 1/2)
    assert result.delta == pytest.approx(-0.125)
    assert result.ci[0] < 0 and result.ci[1] <= 0
    assert result.to_wrong == tuple(f"data.jsonl:{i}" for i in range(1, 6))
    assert result.regressed


def test_a_change_within_noise_passes() -> None:
    before = [1.0, 1.0, 0.0] + [1.0] * 37
    after = [0.0, 0.0, 1.0] + [1.0] * 37
    result = compare(_scores(after), _scores(before), alpha=0.05, min_delta=0.0)
    assert result is not None and not result.regressed
    assert result.p_value == pytest.approx(0.5)  # 2 of 3 discordant pairs got worse


def test_min_delta_spares_a_significant_but_small_drop() -> None:
    before, after = [1.0] * 200, [0.0] * 6 + [1.0] * 194
    result = compare(_scores(after), _scores(before), alpha=0.05, min_delta=0.05)
    assert result is not None and result.p_value < 0.05 and not result.regressed


def test_continuous_scores_use_a_seeded_paired_bootstrap() -> None:
    before = [0.8, 0.7, 0.9, 0.6, 0.75] * 8
    dropped = [v - 0.2 for v in before]
    result = compare(_scores(dropped), _scores(before), alpha=0.05, min_delta=0.0, seed=1)
    assert result is not None and result.test == "paired bootstrap (one-sided)" and result.regressed
    again = compare(_scores(dropped), _scores(before), alpha=0.05, min_delta=0.0, seed=1)
    assert again is not None and again.ci == result.ci
    noisy = [v + (0.05 if i % 2 else -0.05) for i, v in enumerate(before)]
    calm = compare(_scores(noisy), _scores(before), alpha=0.05, min_delta=0.0, seed=1)
    assert calm is not None and not calm.regressed


def test_added_and_removed_examples_are_not_paired() -> None:
    before = {"a": ("d:1", 1.0), "b": ("d:2", 1.0), "gone": ("d:3", 1.0)}
    after = {"a": ("d:1", 1.0), "b": ("d:2", 1.0), "new": ("d:4", 0.0)}
    result = compare(after, before, alpha=0.05, min_delta=0.0)
    assert result is not None
    assert (result.n_paired, result.added, result.removed) == (2, ("d:4",), ("d:3",))
    assert compare({"x": ("d:9", 1.0)}, before, alpha=0.05, min_delta=0.0) is None


POSITIVE = ["I love it, works perfectly", "Great value and fast shipping", "Exactly what I wanted",
            "Comfortable and well made", "My kids adore this toy", "Best purchase this year",
            "Sturdy, simple and reliable", "Arrived early and works great", "Beautiful colour and soft fabric",
            "Five stars, would buy again", "Battery lasts for days", "Setup took two minutes",
            "The sound quality is superb", "Fits perfectly", "Keeps my coffee hot all morning",
            "Brilliant gadget, highly recommend!", "Absolutely fantastic!", "Wow, better than expected!",
            "So happy with this!", "Perfect gift, she loved it!"]
NEGATIVE = ["Broke after two days, terrible", "Awful customer service, never again", "Stopped working within a week",
            "Cheap plastic, fell apart", "Refund took a month, avoid", "The zipper broke on day one",
            "Smells of chemicals", "Arrived damaged and late", "Far too small, returned it",
            "Battery died after an hour", "Instructions were useless", "Loud and rattles constantly",
            "Colour faded after one wash", "The app keeps crashing", "Overpriced for what it is",
            "Missing parts in the box", "Scratched screen out of the box", "Leaks water everywhere",
            "Uncomfortable and stiff", "Worst headphones I have owned"]
# v1 is a Predict behind a small post-processing step; later versions change that step,
# a real program change whose effect on the real model's answers is known in advance
# (the 135M model labels every one of these reviews "positive").
PROGRAM = '''
from typing import Literal

import dspy


class Sentiment(dspy.Signature):
    """Classify the sentiment of a product review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


class Reviewer(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(Sentiment)

    def forward(self, review):
        prediction = self.classify(review=review)
        if {condition}:
            prediction.sentiment = "negative"
        return prediction


program = Reviewer()


def metric(example, prediction, trace=None):
    return example.sentiment == prediction.sentiment


threshold = 0.3
'''


def write_reviews(pytester: pytest.Pytester, condition: str, rows: list[dict[str, str]] | None = None) -> None:
    """The 40-review prompt module, post-processing on ``condition``."""
    pytester.makepyfile(prompt_reviews=PROGRAM.replace("{condition}", condition))
    if rows is None:
        rows = [{"review": r, "sentiment": "positive"} for r in POSITIVE]
        rows += [{"review": r, "sentiment": "negative"} for r in NEGATIVE]
    (pytester.path / "prompt_reviews.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def baselined(pytester: pytest.Pytester) -> None:
    """v1 evaluated and recorded as the baseline."""
    write_reviews(pytester, "False")
    result = pytester.runpytest(UPDATE_BASELINE)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["snapshot written: *prompt_reviews.baseline.json"])


def test_flipping_five_of_forty_fails_with_p_value_and_flips(pytester: pytest.Pytester, baselined: None) -> None:
    write_reviews(pytester, "review.endswith('!')")
    result = pytester.runpytest(f"--junitxml={pytester.path / 'j.xml'}", f"{JSON_REPORT}=r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "prompt 'reviews' failed: score dropped from baseline 0.500 to 0.375 (delta -0.125, 95% CI *, "
        "p=0.0312 < alpha 0.05 by McNemar exact (one-sided), drop > min_delta 0.0)",
        "score 0.375 >= 0.300 on 40 examples (0 parse failures)",
        "baseline 0.500 -> 0.375 on 40 paired examples: delta -0.125 *p=0.0312, McNemar exact (one-sided)",
        "flipped right -> wrong (5): prompt_reviews.jsonl:16, prompt_reviews.jsonl:17, prompt_reviews.jsonl:18, "
        "prompt_reviews.jsonl:19, prompt_reviews.jsonl:20",
    ])
    result.stdout.fnmatch_lines(["FAILED (regression 0.500 -> 0.375, p=0.0312, n=40) prompt_reviews.py::reviews*"])
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "j.xml").iter("property")}
    assert props["dspy_score"] == "0.375" and props["dspy_baseline"] == "0.5" and props["dspy_p_value"] == "0.03125"
    entry = json.loads((pytester.path / "r.json").read_text())["prompts"][0]
    assert entry["outcome"] == "failed" and entry["baseline"]["regressed"] is True
    assert [e["flip"] for e in entry["examples"]].count("to_wrong") == 5


def test_a_change_within_noise_passes_and_is_reported(pytester: pytest.Pytester, baselined: None) -> None:
    write_reviews(pytester, "review.startswith('Wow')")
    result = pytester.runpytest("-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["flipped right -> wrong (1): prompt_reviews.jsonl:18",
                                 "reviews: 0.475 >= 0.300 on 40 examples (0 parse failures), baseline 0.500 (p=0.5)*"])


def test_added_and_removed_examples_are_reported(pytester: pytest.Pytester, baselined: None) -> None:
    rows = [{"review": r, "sentiment": "positive"} for r in POSITIVE[:-2]]
    rows += [{"review": r, "sentiment": "negative"} for r in NEGATIVE]
    rows += [{"review": "Decent but the strap is short", "sentiment": "negative"}]
    write_reviews(pytester, "False", rows)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["  since the baseline: 1 example(s) added, 2 removed (not paired)"])


@pytest.mark.fresh_cache
def test_repeats_are_pooled(pytester: pytest.Pytester) -> None:
    write_reviews(pytester, "False", [{"review": r, "sentiment": "positive"} for r in POSITIVE[:4]])
    pytester.makepyprojecttoml("[tool.dspy_local]\ntemperature = 0.9\n")
    result = pytester.runpytest(f"{REPEATS}=3", f"{JSON_REPORT}=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["model calls: 12 (12 to the model, 0 cached) in 1 item(s)"])
    entry = json.loads((pytester.path / "r.json").read_text())["prompts"][0]
    assert entry["repeats"] == 3 and entry["n"] == 4


def test_step_summary_and_html_report(
    pytester: pytest.Pytester, baselined: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_reviews(pytester, "review.endswith('!')")
    pytester.runpytest(f"{HTML_REPORT}=r.html").assert_outcomes(failed=1)
    text = summary.read_text()
    assert "| `reviews` | ❌ failed | 0.375 | 0.300 | 0.500 | -0.125" in text
    assert "flipped from right to wrong: `prompt_reviews.jsonl:16`" in text
    html = (pytester.path / "r.html").read_text()
    assert "history-plot" in html and "http://" not in html and "https://" not in html
