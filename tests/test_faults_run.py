"""Faults in a run (README, Faults): answers cut off at ``max_tokens``, an answer cache that cannot
be used, multi-step programs, repeated rows; each with the exact line the user sees.

Real parts throughout: the embedded SmolLM2 model, real SQLite files (one overwritten with text,
one made read-only), directories made immutable with ``chattr +i`` (the kernel refuses writes
there even to root, whom ``chmod`` does not stop).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import SENTIMENT_MODULE, SENTIMENT_ROWS, PromptWriter, make_immutable
from test_faults import lit, outcome

from pytest_dspy_local.core.gating import against_baseline
from pytest_dspy_local.core.results import ExampleResult
from pytest_dspy_local.plugin.options import CLEAR_CACHE, JSON_REPORT, NO_CACHE, UPDATE_BASELINE

QA_MODULE = '''
import dspy


class Answer(dspy.Signature):
    """Answer the question in a few words."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


program = dspy.Predict(Answer)


def metric(example, prediction, trace=None):
    # Any answer will do: what DSPy's JSON repair makes of a cut-off one ('') passed this before.
    return len(prediction.answer) < 100
'''
QA_ROWS = [{"question": "What colour is the sky?", "answer": "blue"},
           {"question": "What colour is grass?", "answer": "green"}]
CUT_FIX = "raise `max_tokens` in [tool.dspy_local.prompts.qa] or [tool.dspy_local]"


def report(pytester: pytest.Pytester, name: str = "report.json") -> dict[str, dict[str, Any]]:
    """The JSON report's prompts by name."""
    data = json.loads((pytester.path / name).read_text())
    return {p["name"]: p for p in data["prompts"]}


# --- answers cut off at max_tokens ---------------------------------------------------------------


def test_answer_cut_off_at_3_tokens_is_a_parse_failure_though_json_repair_closes_it(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Real: the embedded model stops at 3 tokens ('{"answer":'); DSPy repairs that into answer=''.
    write_prompt("qa", rows=QA_ROWS, module=QA_MODULE)
    pytester.makepyprojecttoml("[tool.dspy_local.prompts.qa]\nmax_tokens = 3\n")
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, "score 0.000 < 0.500 on 2 examples (2 parse failures)")
    got = f"""    got:      unparseable output: answer cut off at max_tokens=3: '{{"answer":'; {CUT_FIX}"""
    result.stdout.fnmatch_lines([lit(got)] * 2)


def test_answer_cut_off_at_7_tokens_fails_that_example_and_keeps_a_whole_one(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Real: at 7 tokens the sky answer stops mid-string (DSPy would pass on 'The sky is'); the
    # grass answer is a whole JSON object, though llama.cpp reports "length" for it too (its
    # closing brace was the last token allowed).
    write_prompt("qa", rows=QA_ROWS, module=QA_MODULE)
    pytester.makepyprojecttoml("[tool.dspy_local.prompts.qa]\nmax_tokens = 7\n")
    result = pytester.runpytest(f"{JSON_REPORT}=report.json")
    outcome(result, pytest.ExitCode.OK, "qa: 0.500 >= 0.500 on 2 examples (1 parse failures) ok*")
    examples = report(pytester)["qa"]["examples"]
    assert [e["error"] for e in examples] == [
        f"""answer cut off at max_tokens=7: '{{"answer": "The sky is'; {CUT_FIX}""", None]
    assert [e["got"] for e in examples] == [None, {"answer": "Green"}]


# --- an answer cache that cannot be used ---------------------------------------------------------


def one_row_prompt(write_prompt: PromptWriter) -> None:
    """A prompt that passes on any answer, on one row (one model call)."""
    write_prompt(extra="threshold = 0.0\n", rows=SENTIMENT_ROWS[:1])


def damaged_cache(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    """An answer cache file holding ``text`` (not a database) in the run's cache_dir; its path."""
    monkeypatch.setenv("DSPY_LOCAL_CACHE_DIR", str(pytester.path / "answers"))
    path = pytester.path / "answers" / "responses.sqlite3"
    path.parent.mkdir()
    path.write_text(text)
    return path


def damaged_message(path: Path) -> str:
    return (f"ERROR: answer cache {path} is damaged (file is not a database); run once with --dspy-clear-cache "
            "to start a new one (or delete the file), or run with --dspy-no-cache")


def not_writable_message(path: Path, directory: Path, reason: str) -> str:
    return (f"ERROR: cache_dir: cannot write the answer cache {path} ({reason}); make {directory} writable "
            "(chmod u+w; chattr -i if it is immutable), set `cache_dir` to a writable directory, "
            "or run with --dspy-no-cache")


@pytest.mark.fresh_cache
def test_answer_cache_that_is_not_a_database_stops_the_run_and_clear_cache_replaces_it(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_row_prompt(write_prompt)
    path = damaged_cache(pytester, monkeypatch, "not a database, say a file restored from a broken backup\n" * 50)
    outcome(pytester.runpytest(), pytest.ExitCode.USAGE_ERROR, lit(damaged_message(path)), "stderr")
    result = pytester.runpytest(CLEAR_CACHE)
    outcome(result, pytest.ExitCode.OK, "model calls: 1 (1 to the model, 0 cached) in 1 item(s)")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM responses").fetchone() == (1,)


@pytest.mark.fresh_cache
def test_damaged_answer_cache_under_xdist_errors_each_item_with_the_same_line(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker cannot stop the run cleanly: each prompt item errors with the one line instead.
    one_row_prompt(write_prompt)
    path = damaged_cache(pytester, monkeypatch, "not a database\n")
    result = pytester.runpytest_subprocess("-n", "2")
    line = damaged_message(path).removeprefix("ERROR: ")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(f"sentiment: ERROR {line}"))


@pytest.mark.fresh_cache
@pytest.mark.parametrize("flags", [[], [CLEAR_CACHE]], ids=["run", "clear-cache"])
def test_cache_dir_naming_a_file_stops_the_run(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch, flags: list[str]
) -> None:
    one_row_prompt(write_prompt)
    (pytester.path / "answers").write_text("notes\n")
    monkeypatch.setenv("DSPY_LOCAL_CACHE_DIR", str(pytester.path / "answers" / "cache"))
    line = (f"ERROR: cache_dir: {pytester.path / 'answers'} is a file, not a directory; set `cache_dir` in "
            "[tool.dspy_local] (or DSPY_LOCAL_CACHE_DIR) to a directory, or move the file away")
    outcome(pytester.runpytest(*flags), pytest.ExitCode.USAGE_ERROR, lit(line), "stderr")
    assert (pytester.path / "answers").read_text() == "notes\n"


@pytest.mark.fresh_cache
def test_cache_file_that_is_a_directory_stops_the_run(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_row_prompt(write_prompt)
    monkeypatch.setenv("DSPY_LOCAL_CACHE_DIR", str(pytester.path / "answers"))
    path = pytester.path / "answers" / "responses.sqlite3"
    path.mkdir(parents=True)
    line = (f"ERROR: answer cache {path} is a directory, not the cache file; move it away, or set `cache_dir` in "
            "[tool.dspy_local] (or DSPY_LOCAL_CACHE_DIR) to another directory")
    outcome(pytester.runpytest(), pytest.ExitCode.USAGE_ERROR, lit(line), "stderr")


@pytest.mark.fresh_cache
@pytest.mark.parametrize("flags", [[], [CLEAR_CACHE]], ids=["run", "clear-cache"])
def test_read_only_project_stops_the_run_naming_the_cache_and_no_cache_runs(
    pytester: pytest.Pytester, write_prompt: PromptWriter, immutable: list[Path], flags: list[str]
) -> None:
    # Nothing configured: the default cache_dir, .dspy_cache, inside the project.
    one_row_prompt(write_prompt)
    make_immutable(pytester.path, immutable)
    path = pytester.path / ".dspy_cache" / "responses.sqlite3"
    line = not_writable_message(path, pytester.path, "Operation not permitted")
    outcome(pytester.runpytest("-p", "no:cacheprovider", *flags), pytest.ExitCode.USAGE_ERROR, lit(line), "stderr")
    if not flags:
        result = pytester.runpytest("-p", "no:cacheprovider", NO_CACHE)
        outcome(result, pytest.ExitCode.OK, "model calls: 1 (1 to the model, 0 cached) in 1 item(s)")
    assert not (pytester.path / ".dspy_cache").exists()


@pytest.mark.fresh_cache
def test_read_only_cache_file_stops_the_run_before_the_first_answer(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch, immutable: list[Path]
) -> None:
    # A read-only database opens and reads; SQLite refuses the first write, mid-run: caught at start.
    one_row_prompt(write_prompt)
    monkeypatch.setenv("DSPY_LOCAL_CACHE_DIR", str(pytester.path / "answers"))
    path = pytester.path / "answers" / "responses.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    make_immutable(path, immutable)
    line = not_writable_message(path, path.parent, "attempt to write a readonly database")
    outcome(pytester.runpytest(), pytest.ExitCode.USAGE_ERROR, lit(line), "stderr")


# --- multi-step programs -------------------------------------------------------------------------

REACT_MODULE = '''
import dspy


def lookup_capital(country: str) -> str:
    """Return the capital city of a country."""
    return {"france": "Paris", "japan": "Tokyo"}.get(country.strip().lower(), "unknown")


program = dspy.ReAct("question -> answer", tools=[lookup_capital], max_iters=1)
threshold = 0.0


def metric(example, prediction, trace=None):
    return example.answer.lower() in prediction.answer.lower()
'''
CHAIN_MODULE = '''
import dspy


class Summarize(dspy.Signature):
    """Summarize the review in one short sentence."""

    review: str = dspy.InputField()
    summary: str = dspy.OutputField()


class Rate(dspy.Signature):
    """Rate the sentiment of a summary."""

    summary: str = dspy.InputField()
    positive: bool = dspy.OutputField()


class SummarizeThenRate(dspy.Module):
    def __init__(self):
        super().__init__()
        self.summarize = dspy.Predict(Summarize)
        self.rate = dspy.Predict(Rate)

    def forward(self, review):
        return self.rate(summary=self.summarize(review=review).summary)


program = SummarizeThenRate()
threshold = 1.0


def metric(example, prediction, trace=None):
    return example.positive == prediction.positive
'''


def test_program_inputs_are_what_forward_takes_or_the_module_declares() -> None:
    import dspy

    from pytest_dspy_local.core.spec import program_fields

    class Knob(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.answer = dspy.Predict("question, context -> answer")

        def forward(self, question: str, k: int = 3) -> Any:
            return self.answer(question=question, context="")

    namespace: dict[str, Any] = {}
    exec(CHAIN_MODULE, namespace)
    react = dspy.ReAct("question -> answer", tools=[len])
    assert program_fields(react) == (("question",), ("answer",))  # not ReAct's own `trajectory`
    assert program_fields(namespace["program"]) == (("review",), ("summary", "positive"))
    assert program_fields(dspy.ChainOfThought("question -> answer")) == (("question",), ("reasoning", "answer"))
    assert program_fields(Knob())[0] == ("question",)  # a parameter with a default is not a data field


def test_react_with_a_tool_and_a_two_stage_module_run_on_their_own_inputs(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Real: the embedded model drives ReAct (a Python tool) and a summarize-then-rate pipeline.
    # Before, both were refused: "lacks input field 'trajectory'" / "lacks input field 'summary'".
    write_prompt("agent", rows=[{"question": "What is the capital of France?", "answer": "Paris"}],
                 module=REACT_MODULE)
    write_prompt("chain", rows=[{"review": "I love it, works perfectly", "positive": True},
                                {"review": "Broke after two days, terrible", "positive": False}],
                 module=CHAIN_MODULE)
    pytester.makepyprojecttoml("[tool.dspy_local]\nmax_tokens = 64\n")
    result = pytester.runpytest(f"{JSON_REPORT}=report.json")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    prompts = report(pytester)
    assert [[sorted(e["inputs"]) for e in p["examples"]] for p in prompts.values()] == [[["question"]],
                                                                                       [["review"], ["review"]]]
    assert [[sorted(e["expected"]) for e in p["examples"]] for p in prompts.values()] == [[["answer"]],
                                                                                         [["positive"], ["positive"]]]
    for prompt in prompts.values():  # scored, not errored; the verdict is the score against the threshold
        assert prompt["outcome"] == ("passed" if prompt["score"] >= prompt["threshold"] else "failed"), prompt
    assert prompts["agent"]["outcome"] == "passed"  # threshold 0.0
    result.assert_outcomes(passed=1 + (prompts["chain"]["outcome"] == "passed"),
                           failed=prompts["chain"]["outcome"] == "failed", errors=0)


# --- repeated rows -------------------------------------------------------------------------------


def test_identical_rows_are_separate_examples_and_an_unchanged_rerun_pairs_them_all(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Real: the embedded model, a baseline recorded and then re-run from the cache.
    rows = [SENTIMENT_ROWS[0], SENTIMENT_ROWS[1], SENTIMENT_ROWS[0], SENTIMENT_ROWS[2]]
    write_prompt(extra="threshold = 0.0\n", rows=rows)
    outcome(pytester.runpytest(UPDATE_BASELINE), pytest.ExitCode.OK, "*1 passed*")
    recorded = json.loads((pytester.path / "__prompt_snapshots__" / "prompt_sentiment.baseline.json").read_text())
    ids = [e["id"] for e in recorded["examples"]]
    assert ids[2] == f"{ids[0]}#2" and len(set(ids)) == 4
    score = sum(e["score"] for e in recorded["examples"]) / 4
    result = pytester.runpytest(f"{JSON_REPORT}=report.json")
    outcome(result, pytest.ExitCode.OK, f"sentiment: {score:.3f} >= 0.000 on 4 examples (0 parse failures), "
                                        f"baseline {score:.3f} (p=1) ok*")
    baseline = report(pytester)["sentiment"]["baseline"]
    assert (baseline["baseline_score"], baseline["n_paired"], baseline["flipped_to_wrong"],
            baseline["flipped_to_right"], baseline["added"], baseline["removed"]) == (score, 4, [], [], [], [])


def test_a_baseline_written_before_repeats_had_their_own_ids_still_pairs_every_row() -> None:
    # Files written before this release give both copies of a row the same id.
    def example(source: str, key: str, score: float) -> ExampleResult:
        return ExampleResult(source, {}, {}, {}, score, id=key)

    old = {"examples": [{"id": "a", "source": "d:1", "score": 1.0}, {"id": "b", "source": "d:2", "score": 0.0},
                        {"id": "a", "source": "d:3", "score": 0.0}]}
    now = [example("d:1", "a", 1.0), example("d:2", "b", 0.0), example("d:3", "a#2", 0.0)]
    gate = against_baseline(now, old, alpha=0.05, min_delta=0.0, seed=0)
    assert gate.comparison is not None
    assert (gate.comparison.baseline_score, gate.comparison.n_paired, gate.comparison.to_wrong) == (0.333333, 3, ())
    assert [e.flip for e in gate.examples] == [None, None, None]


# --- odd programs, data and metrics (probed beyond the issue) ------------------------------------

WRAPPED_MODULE = '''
import dspy


class Wrap(dspy.Module):
    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("review -> sentiment")

    def forward(self, review):
        {body}


program = Wrap()
threshold = 0.0


def metric(example, prediction, trace=None):
    return example.sentiment == prediction["sentiment"]
'''


def test_program_that_returns_nothing_is_named_not_the_metric(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Before: "metric raised TypeError: 'NoneType' object is not subscriptable ...; fix the metric".
    write_prompt(rows=SENTIMENT_ROWS[:1], module=WRAPPED_MODULE.format(body="self.predict(review=review)"))
    outcome(pytester.runpytest(), pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: the program returned None for example prompt_sentiment.jsonl:1; "
        "return the outputs from forward(), e.g. `return self.predict(...)`"))


def test_program_that_returns_a_dict_shows_its_fields(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    # Before: the report showed got: output={'sentiment': ...}.
    body = 'return {"sentiment": self.predict(review=review).sentiment}'
    write_prompt(rows=SENTIMENT_ROWS[:1], module=WRAPPED_MODULE.format(body=body))
    outcome(pytester.runpytest(f"{JSON_REPORT}=report.json"), pytest.ExitCode.OK, "*1 passed*")
    assert list(report(pytester)["sentiment"]["examples"][0]["got"]) == ["sentiment"]


def test_row_without_the_expected_output_is_named_when_the_metric_trips_on_it(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt(rows=[SENTIMENT_ROWS[0], {"review": SENTIMENT_ROWS[1]["review"]}])
    outcome(pytester.runpytest(), pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: metric raised AttributeError: 'Example' object has no attribute "
        "'sentiment' on example prompt_sentiment.jsonl:2; the row lacks 'sentiment', which other rows have: "
        "add it, or fix the metric"))


@pytest.mark.parametrize(("returned", "score"), [("np.bool_(True)", "1.000"), ("np.float32(0.5)", "0.500")])
def test_metric_returning_a_numpy_scalar_is_a_score(
    pytester: pytest.Pytester, write_prompt: PromptWriter, returned: str, score: str
) -> None:
    # Before: np.bool_ was refused as "metric returned np.True_ (bool) ...; return a number or a bool".
    module = SENTIMENT_MODULE.replace("    return example.sentiment == prediction.sentiment",
                                      f"    import numpy as np\n    return {returned}")
    write_prompt(rows=SENTIMENT_ROWS[:1], module=module + "threshold = 0.0\n")
    outcome(pytester.runpytest(), pytest.ExitCode.OK, f"sentiment: {score} >= 0.000 on 1 examples*")


def test_csv_saved_with_a_byte_order_mark_reads_its_first_column(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Excel's "CSV UTF-8" starts with a BOM. Before: "example prompt_sentiment.csv:2 lacks input field 'review'".
    write_prompt(rows=None, extra="threshold = 0.0\n")
    row = SENTIMENT_ROWS[0]
    (pytester.path / "prompt_sentiment.csv").write_bytes(
        f"\ufeffreview,sentiment\n\"{row['review']}\",{row['sentiment']}\n".encode())
    outcome(pytester.runpytest(f"{JSON_REPORT}=report.json"), pytest.ExitCode.OK, "*1 passed*")
    assert report(pytester)["sentiment"]["examples"][0]["inputs"] == {"review": row["review"]}


def test_empty_unicode_null_and_nested_inputs_are_evaluated(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Real: the embedded model answers each (any answer); none is an error or a crash.
    reviews: list[Any] = ["", "J'adore 😍 — très bien! שלום مرحبا", None, {"title": "Great", "stars": [5, 5]}]
    write_prompt(extra="threshold = 0.0\n", rows=[{"review": r, "sentiment": "positive"} for r in reviews])
    result = pytester.runpytest(f"{JSON_REPORT}=report.json")
    outcome(result, pytest.ExitCode.OK, "sentiment: * on 4 examples (0 parse failures) ok*")
    examples = report(pytester)["sentiment"]["examples"]
    assert [e["inputs"]["review"] for e in examples] == reviews
    assert all(e["got"]["sentiment"] in ("positive", "negative") for e in examples)
