"""The faults table (README, Troubleshooting), configuration faults: typos that would weaken the gate
silently, wrong-shape baselines, messages that blamed the wrong setting, and a public-style DSPy project.

Real parts wherever one produces the fault: the real embedded model; Python's own ``http.server``
on 127.0.0.1 as the plain web server a ``base_url`` may point at by mistake; real files. One
stand-in, named where it is used: a loopback server answering HTTP 500 to a ``json_schema``
``response_format`` as llama_cpp.server 0.3.36 does (FACTS.md), whose other answers are the real
SmolLM2 model's (tests/servers/latency_server.py). Every case checks the exact line, pytest's
exit code (1: a failing prompt item, 4: a usage error) and that no traceback is shown.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import OLLAMA_MODEL, OPENAI_MODEL, SENTIMENT_ROWS, PromptWriter
from servers import latency_server
from test_faults import lit, outcome

from pytest_dspy_local.plugin.options import (
    BACKEND,
    BASE_URL,
    CONCURRENCY,
    JSON_REPORT,
    MODEL,
    NO_CACHE,
    OPTIMIZE_FORCE,
    OPTIMIZER,
    UPDATE_BASELINE,
)

PASSING = "threshold = 0.0\n"
SNAPSHOTS = "__prompt_snapshots__"


def usage_error(result: pytest.RunResult, line: str) -> None:
    """Exit code 4 and the one line on stderr."""
    outcome(result, pytest.ExitCode.USAGE_ERROR, f"ERROR: {lit(line)}", "stderr")


# --- typos that weaken the gate silently -------------------------------------------------------


@pytest.mark.parametrize("table", ["dspy-local", "pytest-dspy-local", "dspy.local"])
def test_misspelt_table_name_is_refused_naming_the_right_one(pytester: pytest.Pytester, table: str) -> None:
    header = f'[tool."{table}"]' if "." in table else f"[tool.{table}]"
    pyproject = pytester.makepyprojecttoml(f"{header}\nthreshold = 0.9\n")
    result = pytester.runpytest()
    usage_error(result, f"{pyproject}: [tool.{table}] is not read; did you mean [tool.dspy_local]? rename the "
                        "table (underscore, no prefix)")


def test_misspelt_key_names_the_nearest_known_one(pytester: pytest.Pytester) -> None:
    pyproject = pytester.makepyprojecttoml("[tool.dspy_local]\ntreshold = 0.9\n")
    result = pytester.runpytest()
    usage_error(result, f"{pyproject}: unknown key 'treshold' in [tool.dspy_local]; did you mean 'threshold'? "
                        "known keys: <*>")


def test_prompt_table_for_a_prompt_that_does_not_exist_is_refused(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt()
    pyproject = pytester.makepyprojecttoml("[tool.dspy_local.prompts.sentimnt]\nthreshold = 0.9\n")
    result = pytester.runpytest("--collect-only")
    usage_error(result, f"{pyproject}: [tool.dspy_local.prompts.sentimnt] names no prompt module; did you mean "
                        "'sentiment'? a table's name is its module's file name without `prompt_` and `.py`")


def test_prompt_table_for_a_prompt_this_run_did_not_collect_is_fine(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt()
    (pytester.path / "other").mkdir()
    (pytester.path / "other" / "prompt_triage.py").write_text("program = None\nmetric = None\n")
    pytester.makepyprojecttoml("[tool.dspy_local.prompts.triage]\nthreshold = 0.9\n")
    result = pytester.runpytest("prompt_sentiment.py", "--collect-only")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(["*<PromptItem sentiment>*"])


@pytest.mark.parametrize("value", ["-1", "1.5", "float('nan')"])
def test_module_threshold_outside_0_to_1_is_refused(
    pytester: pytest.Pytester, write_prompt: PromptWriter, value: str
) -> None:
    write_prompt(extra=f"\nthreshold = {value}\n")
    result = pytester.runpytest()
    shown = {"float('nan')": "nan"}.get(value, value)
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: `threshold = {shown}` must be between 0 and 1 "
        "(the mean metric's pass mark), e.g. threshold = 0.5"))


def test_inputs_naming_a_field_the_program_lacks_is_refused(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt(extra='\ninputs = ("reviw",)\n')
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: `inputs` names 'reviw', which the program does not take; "
        "did you mean 'review'? its input fields: review"))


def test_n_ctx_too_small_for_any_prompt_is_refused_naming_the_key(pytester: pytest.Pytester) -> None:
    pyproject = pytester.makepyprojecttoml("[tool.dspy_local]\nn_ctx = 64\n")
    result = pytester.runpytest()
    usage_error(result, f"{pyproject} [tool.dspy_local] n_ctx must be at least 512 (tokens of context: DSPy's "
                        "prompts alone take a few hundred; 8192 is the default), got 64")


# --- wrong-shape baseline ----------------------------------------------------------------------

WRONG_SHAPES = {
    "a list": ("[1, 2]", "it holds a JSON list"),
    "no examples": ('{"score": 0.5}', "no `examples` list"),
    "id a number": ('{"examples": [{"id": 1, "source": "x:1", "score": 1.0}]}', "examples[0].id is 1, not a string"),
    "score a string": ('{"examples": [{"id": "a", "source": "x:1", "score": "high"}]}',
                       'examples[0].score is "high", not a number'),
    "model a string": ('{"examples": [], "model": "smollm2"}', 'model is "smollm2", not an object'),
}


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_wrong_shape_baseline_is_one_line_and_update_replaces_it(
    pytester: pytest.Pytester, write_prompt: PromptWriter, shape: str
) -> None:
    write_prompt(extra=PASSING)
    path = pytester.path / SNAPSHOTS / "prompt_sentiment.baseline.json"
    path.parent.mkdir()
    content, problem = WRONG_SHAPES[shape]
    path.write_text(content)
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{path}: not a baseline file ({problem}); restore it from git, or replace it with "
        "`pytest --dspy-update-baseline`"))
    replaced = pytester.runpytest(UPDATE_BASELINE, "-rA")
    replaced.assert_outcomes(passed=1)
    document = json.loads(path.read_text())
    assert [e["source"] for e in document["examples"]] == [f"prompt_sentiment.jsonl:{n}" for n in range(1, 5)]
    assert [h["label"] for h in document["history"]] == ["update-baseline"]  # nothing carried over from the bad file
    pytester.runpytest().assert_outcomes(passed=1)


# --- messages that blamed the wrong thing ------------------------------------------------------


@contextmanager
def plain_web_server(root: Path) -> Iterator[str]:
    """Python's own static file server on 127.0.0.1 (an empty directory: every path is its 404 page)."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_plain_web_server_as_openai_base_url_is_not_blamed_on_v1(
    pytester: pytest.Pytester, write_prompt: PromptWriter, tmp_path: Path
) -> None:
    write_prompt()
    with plain_web_server(tmp_path) as url:
        result = pytester.runpytest(f"{BACKEND}=openai", f"{BASE_URL}={url}/v1", f"{MODEL}={OPENAI_MODEL}")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"--dspy-base-url: {url}/v1/models answered 404 (File not found); no OpenAI-compatible API answers there "
        "(a web server or another service?); point it at the model server, e.g. http://127.0.0.1:8000/v1"))


def test_plain_web_server_as_ollama_base_url_is_not_a_missing_model(
    pytester: pytest.Pytester, write_prompt: PromptWriter, tmp_path: Path
) -> None:
    write_prompt()
    with plain_web_server(tmp_path) as url:
        result = pytester.runpytest(f"{BACKEND}=ollama", f"{BASE_URL}={url}", f"{MODEL}={OLLAMA_MODEL}")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"--dspy-base-url: {url}/api/tags answered 404: no Ollama server there; fix the URL (Ollama listens on "
        "http://127.0.0.1:11434 unless OLLAMA_HOST says otherwise)"))


def test_ollama_host_at_a_plain_web_server_is_named_as_itself(
    pytester: pytest.Pytester, write_prompt: PromptWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_prompt()
    with plain_web_server(tmp_path) as url:
        monkeypatch.setenv("OLLAMA_HOST", url.removeprefix("http://"))
        result = pytester.runpytest(f"{MODEL}={OLLAMA_MODEL}")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"OLLAMA_HOST: {url}/api/tags answered 404: no Ollama server there; fix the URL (Ollama listens on "
        "http://127.0.0.1:11434 unless OLLAMA_HOST says otherwise)"))


def test_bad_ollama_host_is_named_as_itself(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:eleven")
    result = pytester.runpytest()
    usage_error(result, "OLLAMA_HOST: '127.0.0.1:eleven' is not a server address; fix or unset the variable "
                        "(e.g. OLLAMA_HOST=127.0.0.1:11434)")


def test_base_url_without_its_scheme_says_so(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(f"{BASE_URL}=127.0.0.1:8000/v1", f"{MODEL}={OPENAI_MODEL}")
    usage_error(result, "--dspy-base-url: '127.0.0.1:8000/v1' has no http:// or https://; "
                        "write http://127.0.0.1:8000/v1")


# --- a public DSPy project ---------------------------------------------------------------------

TRIAGE_MODULE = '''
from typing import Literal

import dspy


class Triage(dspy.Signature):
    """Triage a customer support ticket."""

    subject: str = dspy.InputField()
    body: str = dspy.InputField()
    tier: str = dspy.InputField(desc="the customer's plan")
    priority: Literal["high", "low"] = dspy.OutputField()
    team: Literal["billing", "tech"] = dspy.OutputField()


class TicketTriage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.triage = dspy.ChainOfThought(Triage)

    def forward(self, subject, body, tier):
        return self.triage(subject=subject, body=body, tier=tier)


program = TicketTriage
threshold = 0.0


def metric(example, prediction, trace=None):
    return ((example.priority == prediction.priority) + (example.team == prediction.team)) / 2
'''
TRIAGE_ROWS = [
    {"subject": "Charged twice", "body": "My card was billed two times this month.", "tier": "pro",
     "priority": "high", "team": "billing", "category": "payments"},
    {"subject": "App crashes", "body": "The app closes when I open settings.", "tier": "free",
     "priority": "low", "team": "tech", "category": "mobile"},
    {"subject": "Refund please", "body": "I cancelled but still paid for March.", "tier": "free",
     "priority": "low", "team": "billing", "category": "payments"},
    {"subject": "Site down", "body": "Nobody in our company can log in since 9am.", "tier": "pro",
     "priority": "high", "team": "tech", "category": "outage"},
]
METADATA_NOTE = ("data key(s) 'category': no input or output field of the program, so kept as row metadata "
                 "(the metric sees them; not expected outputs, not in demos)")


def test_module_class_as_program_runs_and_extra_keys_stay_metadata(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Real: the embedded model runs the class's instance; `category` is in every row.
    write_prompt("triage", rows=TRIAGE_ROWS, module=TRIAGE_MODULE)
    result = pytester.runpytest(f"{JSON_REPORT}=report.json")
    result.assert_outcomes(passed=1)
    (prompt,) = json.loads((pytester.path / "report.json").read_text())["prompts"]
    assert {tuple(sorted(e["expected"])) for e in prompt["examples"]} == {("priority", "team")}
    assert prompt["notes"].count(METADATA_NOTE) == 1


def test_optimized_demos_carry_no_metadata_key(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    # Real: BootstrapFewShot on the embedded model, labelled demos only: DSPy copies training rows, category and all.
    write_prompt("triage", rows=TRIAGE_ROWS, module=TRIAGE_MODULE)
    pytester.makepyprojecttoml("[tool.dspy_local.optimizers.bootstrap]\nmax_bootstrapped_demos = 0\n")
    result = pytester.runpytest(OPTIMIZE_FORCE, f"{OPTIMIZER}=bootstrap")
    result.assert_outcomes(passed=1)
    state = json.loads((pytester.path / SNAPSHOTS / "prompt_triage.program.json").read_text())
    demos = state["triage.predict"]["demos"]
    assert demos, "the optimizer kept some demos"
    assert all(set(d) <= {"subject", "body", "tier", "reasoning", "priority", "team", "augmented"} for d in demos)
    assert "category" not in (pytester.path / SNAPSHOTS / "prompt_triage.program.json").read_text()


@pytest.mark.parametrize(("program", "line"), [
    ("class NeedsArgs(dspy.Module):\n    def __init__(self, k):\n        super().__init__()\n"
     "        self.p = dspy.Predict('review -> sentiment')\n\n\nprogram = NeedsArgs\n",
     "`program = NeedsArgs` needs constructor arguments (missing a required argument: 'k'); "
     "write program = NeedsArgs(...) with them"),
    ("program = Sentiment\n",
     "`program` must be a dspy.Module or a zero-argument function returning one, got class Sentiment; "
     "e.g. program = dspy.Predict(MySignature)"),
])
def test_a_class_that_cannot_be_the_program_is_named(
    pytester: pytest.Pytester, write_prompt: PromptWriter, program: str, line: str
) -> None:
    write_prompt(extra="\n\n" + program)
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(f"{pytester.path / 'prompt_sentiment.py'}: {line}"))


FAILING_MIPRO = '''
[tool.dspy_local.optimizers.mipro]
num_candidates = 2
num_trials = 2
max_bootstrapped_demos = 1
max_labeled_demos = 1
program_aware_proposer = false
data_aware_proposer = false
minibatch = false
'''
REPORT_LINES = 60  # was 448 on a public project; the part a reviewer reads fits a screen


def test_failing_optimize_reports_what_a_reviewer_needs(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    # Real: MIPROv2 on the embedded model, the prompt failing its threshold afterwards.
    write_prompt(extra="\nthreshold = 1.0\n", rows=[*SENTIMENT_ROWS, *SENTIMENT_ROWS[:2]])
    pytester.makepyprojecttoml(FAILING_MIPRO)
    result = pytester.runpytest(OPTIMIZE_FORCE, "-p", "no:cacheprovider")  # forced: the optimizer must run
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = result.stdout.str()
    failure = text[text.index("= FAILURES ="):]
    assert "it/s]" not in text and "%|" not in text, "no progress bars"
    assert "Captured stderr" not in failure and "Captured log" not in failure
    assert len(failure.splitlines()) <= REPORT_LINES, failure


# --- one json_schema probe per run -------------------------------------------------------------

# llama_cpp.server 0.3.36's refusal of OpenAI's json_schema shape (HTTP 500, a pydantic literal error).
LLAMA_CPP_REFUSAL = {"error": {"message": "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                                          "'msg': \"Input should be 'text' or 'json_object'\", 'input': "
                                          "'json_schema'}]", "type": "internal_server_error"}}


class RefusingHandler(latency_server.Handler):
    """Stand-in for llama_cpp.server's behaviour: HTTP 500 to a ``json_schema`` response_format (counted);
    every other chat is answered by the real SmolLM2 model."""

    def chat(self, body: dict[str, object]) -> None:
        """Refuse OpenAI's shape as llama_cpp.server does; answer the rest."""
        kind = (body.get("response_format") or {}).get("type")  # type: ignore[union-attr]
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.kinds.append(kind)  # type: ignore[attr-defined]
        if kind == "json_schema":
            self.send_json(500, LLAMA_CPP_REFUSAL)
            return
        super().chat(body)


@pytest.fixture(scope="module")
def refusing_server() -> Iterator[latency_server.LatencyServer]:
    """The stand-in on a loopback port, no added latency."""
    with latency_server.serve(0.0) as server:
        server.RequestHandlerClass = RefusingHandler
        server.kinds, server.lock = [], threading.Lock()  # type: ignore[attr-defined]
        yield server


def test_json_schema_is_probed_once_per_run_not_once_per_thread(
    pytester: pytest.Pytester, write_prompt: PromptWriter, refusing_server: latency_server.LatencyServer
) -> None:
    write_prompt(extra=PASSING)
    result = pytester.runpytest(f"{BACKEND}=openai", f"{BASE_URL}={refusing_server.base_url}",
                                f"{MODEL}={latency_server.ALIAS}", NO_CACHE, f"{CONCURRENCY}=4")
    result.assert_outcomes(passed=1)
    kinds = refusing_server.kinds  # type: ignore[attr-defined]
    assert kinds.count("json_schema") == 1, kinds
    assert kinds.count("json_object") == len(SENTIMENT_ROWS), kinds


def test_optimizer_refusing_its_knobs_is_one_line(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    # Real: MIPROv2 checks its minibatch against the validation set after the first evaluation.
    write_prompt(extra=PASSING)
    pytester.makepyprojecttoml(FAILING_MIPRO.replace("minibatch = false\n", "minibatch_size = 50\n"))
    result = pytester.runpytest(OPTIMIZE_FORCE)
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: the mipro optimizer stopped: Minibatch size cannot exceed the "
        "size of the valset. Valset size: 1.; adjust its settings in [tool.dspy_local.optimizers.mipro]"))


# --- probed beyond the issue -------------------------------------------------------------------

PROBED_SETTINGS = {
    # each was accepted silently before: a random seed every run, a NaN timeout, a pattern that collects nothing
    "seed = -1": "seed must be 0 or more, got -1",
    "timeout = nan": "timeout must be a finite number, got nan",
    'prompt_files = ["prompts_*.txt"]': "prompt_files: 'prompts_*.txt' can never match a prompt module (a .py file "
                                        'name, no directory); use a pattern such as "prompt_*.py"',
    'optimizer = "mipo"': "optimizer must be one of mipro, bootstrap, gepa, got 'mipo'; did you mean 'mipro'?",
}


@pytest.mark.parametrize("setting", sorted(PROBED_SETTINGS))
def test_probed_bad_settings_stop_the_run(pytester: pytest.Pytester, setting: str) -> None:
    pyproject = pytester.makepyprojecttoml(f"[tool.dspy_local]\n{setting}\n")
    result = pytester.runpytest()
    usage_error(result, f"{pyproject} [tool.dspy_local] {PROBED_SETTINGS[setting]}")


def test_misspelt_environment_variable_is_refused(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_LOCAL_TRESHOLD", "0.99")  # was ignored: the run gated on the default 0.5
    result = pytester.runpytest()
    usage_error(result, "DSPY_LOCAL_TRESHOLD is not a setting of pytest-dspy-local; did you mean "
                        "DSPY_LOCAL_THRESHOLD? rename or unset it")


def test_misspelt_target_key_and_backend_name_the_nearest(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    pyproject = pytester.makepyprojecttoml('[tool.dspy_local.targets.prod]\nmodel = "m"\nbase_ur = "http://x/v1"\n')
    usage_error(pytester.runpytest(), f"{pyproject}: unknown key 'base_ur' in [tool.dspy_local.targets.prod]; did "
                                      "you mean 'base_url'? known keys: backend, base_url, model")
    write_prompt()
    pytester.makepyprojecttoml('[tool.dspy_local]\nbackend = "olama"\nmodel = "smollm2:135m"\n')
    outcome(pytester.runpytest(), pytest.ExitCode.TESTS_FAILED, lit(
        "--dspy-backend: unknown backend 'olama'; did you mean 'ollama'? choose auto, embedded, ollama, openai, "
        "or one that a conftest.py provides through pytest_dspy_local_make_backend"))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_data_file_saved_with_a_bom_and_crlf_reads_as_written(
    pytester: pytest.Pytester, write_prompt: PromptWriter, suffix: str
) -> None:
    # Real: a UTF-8 BOM and CRLF line ends, as Excel and Notepad save; the BOM used to rename the first
    # CSV column ("lacks input field 'review'") and break the first JSON line.
    write_prompt(rows=None, extra=PASSING)
    if suffix == ".csv":
        lines = ["review,sentiment", *(f'"{r["review"]}",{r["sentiment"]}' for r in SENTIMENT_ROWS)]
    else:
        lines = [json.dumps(r) for r in SENTIMENT_ROWS]
    (pytester.path / f"prompt_sentiment{suffix}").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    result = pytester.runpytest(f"{JSON_REPORT}=report.json")
    result.assert_outcomes(passed=1)
    (prompt,) = json.loads((pytester.path / "report.json").read_text())["prompts"]
    assert [e["inputs"]["review"] for e in prompt["examples"]] == [r["review"] for r in SENTIMENT_ROWS]
