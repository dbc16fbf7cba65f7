"""End-to-end behaviour of prompt items, run by pytester on the real embedded model."""

from __future__ import annotations

import json

import pytest
from conftest import SENTIMENT_MODULE, SENTIMENT_ROWS, PromptWriter

from pytest_dspy_local.models.backends.embedded import LISTENER_GUARD
from pytest_dspy_local.plugin.options import AUDIT, BACKEND, MAX_EXAMPLES, MODEL, THRESHOLD


def test_passing_prompt_reports_score_model_and_digest(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.4\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "dspy-local: backend embedded, model smollm2-135m",
        "dspy-local model: SmolLM2-135M-Instruct.Q4_1.gguf sha256:* (embedded, in-process)",
        "prompt_sentiment.py::sentiment PASSED (score 0.500 >= 0.400, n=4)*",
        "sentiment: 0.500 >= 0.400 on 4 examples (0 parse failures) ok*",
    ])


def test_unreachable_threshold_is_refused_before_any_model_call(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt(extra="threshold = 1.01\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*prompt_sentiment.py: `threshold = 1.01` must be between 0 and 1 (the mean metric's pass mark), "
        "e.g. threshold = 0.5",
        "model calls: 0 (0 to the model, 0 cached) in 1 item(s)",
    ])
    assert "Traceback" not in result.stdout.str()


def test_default_threshold_comes_from_the_command_line(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt()
    result = pytester.runpytest(f"{THRESHOLD}=0.9")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*score 0.500 is below threshold 0.900*"])


def test_module_threshold_beats_the_configured_default(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.25\n")
    pytester.runpytest(f"{THRESHOLD}=0.9").assert_outcomes(passed=1)


def test_per_prompt_table_beats_the_module(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.25\n")
    pytester.makepyprojecttoml("[tool.dspy_local.prompts.sentiment]\nthreshold = 0.75\n")
    pytester.runpytest().assert_outcomes(failed=1)


def test_precedence_cli_over_env_over_pyproject(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_prompt()
    pytester.makepyprojecttoml("[tool.dspy_local]\nthreshold = 0.9\n")
    pytester.runpytest().assert_outcomes(failed=1)
    monkeypatch.setenv("DSPY_LOCAL_THRESHOLD", "0.3")
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest(f"{THRESHOLD}=0.8").assert_outcomes(failed=1)


def test_max_examples_limits_the_evaluation(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.9\n")
    result = pytester.runpytest(f"{MAX_EXAMPLES}=1", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*PASSED (score 1.000 >= 0.900, n=1)*"])


def test_lookalike_module_is_not_collected_but_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(prompt_templates="GREETING = 'hello {name}'\n")
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["dspy-local: not a prompt module: *prompt_templates.py (defines neither*"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import dspy\nprogram = dspy.Predict('q -> a')\n", "*prompt_half.py: defines `program` but no `metric`*"),
        ("def metric(e, p, trace=None):\n    return 1\n", "*prompt_half.py: defines `metric` but no `program`*"),
    ],
)
def test_half_a_prompt_module_is_an_error_naming_the_missing_name(
    pytester: pytest.Pytester, source: str, message: str
) -> None:
    pytester.makepyfile(prompt_half=source)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()


def test_program_must_be_a_dspy_module(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="program = 'not a program'\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*prompt_sentiment.py: `program` must be a dspy.Module or a zero-argument function*"])


def test_program_factory_is_called(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="_made = program\nprogram = lambda: _made\nthreshold = 0.4\n")
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("def metric(e, p, trace=None):\n    raise KeyError('label')\n",
         "*metric raised KeyError: 'label' on example prompt_sentiment.jsonl:1; fix the metric"),
        ("def metric(e, p, trace=None):\n    return 'yes'\n",
         "*metric returned 'yes' (str) for example prompt_sentiment.jsonl:1; return a number or a bool"),
    ],
)
def test_bad_metric_is_reported_with_the_example(
    pytester: pytest.Pytester, write_prompt: PromptWriter, metric: str, message: str
) -> None:
    write_prompt(extra=metric)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()


def test_malformed_data_line_names_file_and_line(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt()
    path = pytester.path / "prompt_sentiment.jsonl"
    path.write_text(path.read_text() + '{"review": "oops", \n')
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*prompt_sentiment.jsonl:5: not valid JSON (*); fix or remove the line"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    ("suffix", "text", "message"),
    [
        (".jsonl", "", "*prompt_sentiment.jsonl: no examples; add at least one row"),
        (".csv", "review,sentiment\ngood,positive,extra\n", "*prompt_sentiment.csv:2: the row has a different number*"),
        (".yaml", "- review: good\n  sentiment: [unclosed\n", "*prompt_sentiment.yaml:3: not valid YAML*"),
        (".yaml", "review: good\n", "*prompt_sentiment.yaml: must be a YAML list of mappings*"),
    ],
)
def test_bad_data_files(
    pytester: pytest.Pytester, write_prompt: PromptWriter, suffix: str, text: str, message: str
) -> None:
    write_prompt(rows=None)
    (pytester.path / f"prompt_sentiment{suffix}").write_text(text)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".csv", "review,sentiment\nI love it,positive\nTerrible,negative\n"),
        (".yaml", "- review: I love it\n  sentiment: positive\n- review: Terrible\n  sentiment: negative\n"),
    ],
)
def test_csv_and_yaml_data(pytester: pytest.Pytester, write_prompt: PromptWriter, suffix: str, text: str) -> None:
    write_prompt(rows=None, extra="threshold = 0.5\n")
    (pytester.path / f"prompt_sentiment{suffix}").write_text(text)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*n=2)*"])


def test_missing_data_says_where_to_put_it(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(rows=None)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*no evaluation data; add prompt_sentiment.jsonl (or .csv/.yaml) beside it, or a fixture*"]
    )


def test_row_lacking_an_input_field(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(rows=[{"text": "hi", "sentiment": "positive"}])
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*example prompt_sentiment.jsonl:1 lacks input field 'review' (inputs: review)*"])


FIXTURE_DATA = '''
import pytest

@pytest.fixture
def sentiment_dataset(tmp_path):
    assert tmp_path.is_dir()  # fixtures may use other fixtures
    return [{"review": "Superb, I love it", "sentiment": "positive"},
            {"review": "Dreadful and broken", "sentiment": "negative"}]
'''


def test_dataset_from_a_conftest_fixture(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(rows=None, extra="threshold = 0.5\n")
    pytester.makeconftest(FIXTURE_DATA)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*n=2)*"])


def test_dataset_fixture_in_the_module_itself(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(rows=None, extra=FIXTURE_DATA + "\nthreshold = 0.5\n")
    pytester.runpytest().assert_outcomes(passed=1)


def test_data_file_and_fixture_together_is_an_error(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt()
    pytester.makeconftest(FIXTURE_DATA)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*data comes from both prompt_sentiment.jsonl and fixture 'sentiment_dataset'; keep one"]
    )


def test_inputs_override(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="inputs = ('review',)\n", rows=[{"text": "Great", "sentiment": "positive"}])
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*lacks input field 'review' (inputs: review)*"])


def test_unresolvable_backend_stops_the_run_before_any_item(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt()
    result = pytester.runpytest(f"{MODEL}=llama3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dspy-backend=auto cannot tell which backend serves model 'llama3'*"])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"{BACKEND}=nonsense"], "*--dspy-backend: unknown backend 'nonsense'; choose auto, embedded, *"),
        ([f"{MODEL}=gguf:/nowhere/model.gguf"], "*--dspy-model: GGUF file /nowhere/model.gguf does not exist*"),
        ([f"{MODEL}=gguf:prompt_sentiment.jsonl"], "*prompt_sentiment.jsonl is not a GGUF model file*"),
        ([f"{BACKEND}=openai", "--dspy-base-url=http://127.0.0.1:9/v1", f"{MODEL}=m"],
         "*--dspy-base-url: cannot reach http://127.0.0.1:9/v1*"),
    ],
)
def test_bad_model_settings_fail_the_item_in_one_line(
    pytester: pytest.Pytester, write_prompt: PromptWriter, args: list[str], message: str
) -> None:
    write_prompt()
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "pyproject", "message"),
    [
        ([f"{THRESHOLD}=1.5"], "", "*--dspy-threshold must be between 0 and 1*"),
        ([f"{MAX_EXAMPLES}=0"], "", "*--dspy-max-examples must be at least 1*"),
        ([], "[tool.dspy_local]\nthreshhold = 0.5\n", "*unknown key 'threshhold' in [[]tool.dspy_local[]]*"),
        ([], "[tool.dspy_local]\nthreshold = -0.1\n", "*threshold must be between 0 and 1*"),
        ([], "[tool.dspy_local.prompts.x]\nmodel = 'y'\n", "*unknown key 'model' in [[]tool.dspy_local.prompts.x[]]*"),
    ],
)
def test_bad_settings_stop_the_run_early(
    pytester: pytest.Pytester, args: list[str], pyproject: str, message: str
) -> None:
    if pyproject:
        pytester.makepyprojecttoml(pyproject)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_selection_with_k_markers_and_last_failed(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt("mood", extra="threshold = 0.4\n")
    write_prompt("tone", extra="import pytest\npytestmark = pytest.mark.slow\nthreshold = 0.9\n")
    pytester.makeini("[pytest]\nmarkers = slow\n")
    pytester.runpytest("-k", "mood").assert_outcomes(passed=1)
    pytester.runpytest("-m", "slow").assert_outcomes(failed=1)
    pytester.runpytest("-p", "cacheprovider").assert_outcomes(passed=1, failed=1)
    result = pytester.runpytest("-p", "cacheprovider", "--lf", "-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*prompt_tone.py::tone FAILED*"])


@pytest.mark.fresh_cache
def test_unchanged_rerun_makes_no_model_calls(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.4\n")
    pytester.runpytest().stdout.fnmatch_lines(["model calls: 4 (4 to the model, 0 cached) in 1 item(s)"])
    pytester.runpytest().stdout.fnmatch_lines(["model calls: 4 (0 to the model, 4 cached) in 1 item(s)"])


def test_parse_failures_are_counted_not_crashes(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    # Three tokens cannot hold the JSON object: the real model's output is cut off mid-way.
    write_prompt(extra="threshold = 0.0\n")
    pytester.makepyprojecttoml("[tool.dspy_local]\nmax_tokens = 3\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*0.000 >= 0.000 on 4 examples (4 parse failures)*"])


def test_under_xdist(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt("mood", extra="threshold = 0.4\n")
    write_prompt("tone", extra="threshold = 0.4\n")
    pytester.runpytest("-n", "2").assert_outcomes(passed=2)


@pytest.mark.fresh_cache
def test_under_xdist_the_receipt_lists_each_worker_s_listener(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # A fresh controller process (an in-process run would carry this test process's listeners);
    # loadfile puts each prompt module on its own worker, whose embedded model opens one listener.
    write_prompt("mood", extra="threshold = 0.4\n")
    write_prompt("tone", extra="threshold = 0.4\n")
    args = ("-n", "2", "--dist", "loadfile", "--no-loadscope-reorder", "-v", f"{AUDIT}=audit.json")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2)
    workers = {line.split("]")[0] for line in result.stdout.lines if line.startswith("[gw")}
    listeners = json.loads((pytester.path / "audit.json").read_text())["listeners"]
    assert len(listeners) == len(workers) == 2, (workers, listeners)
    assert len({entry["address"] for entry in listeners}) == 2
    for entry in listeners:
        assert entry["address"].startswith("http://127.0.0.1:"), entry
        assert (entry["opened_by"], entry["protection"]) == ("embedded model SmolLM2-135M-Instruct.Q4_1.gguf",
                                                              LISTENER_GUARD)


def test_under_xdist_the_model_is_named_for_custom_prompt_file_patterns(pytester: pytest.Pytester) -> None:
    # The xdist controller collects nothing; it tells prompt items from the workers' node ids by the
    # configured patterns (here not prompt_*.py) and the item's name.
    pytester.makepyprojecttoml('[tool.dspy_local]\nprompt_files = ["*_prompt.py"]\n')
    pytester.makepyfile(sentiment_prompt=SENTIMENT_MODULE + "threshold = 0.4\n")
    (pytester.path / "sentiment_prompt.jsonl").write_text("\n".join(json.dumps(r) for r in SENTIMENT_ROWS) + "\n")
    result = pytester.runpytest("-n", "1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dspy-local model: SmolLM2-135M-Instruct.Q4_1.gguf sha256:* (embedded, in-process)"])


def test_unwritable_report_path_is_one_line(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.4\n")
    blocker = pytester.path / "not_a_dir"
    blocker.write_text("")
    result = pytester.runpytest(f"--dspy-json={blocker / 'r.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: dspy-local: cannot write *not_a_dir* (File exists); fix the path"])
