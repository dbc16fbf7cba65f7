"""The faults table (README, Troubleshooting): each fault reproduced, with the one line the user sees.

Real parts wherever one can produce the fault: a real ``python -m llama_cpp.server`` started
here (killed mid-run; started with ``--n_ctx 512`` for context overflow), the real embedded
model, real files (a GGUF cut to 1 MB, a Latin-1 data file). ``FaultyServer`` is a stand-in,
named as such in each test that uses it, for what no real server here does on demand: HTTP 500,
a body that is not JSON, an empty answer, free text despite the JSON schema, never answering.
Every case checks the exact line, pytest's exit code (1: a failing prompt item, 4: a usage
error) and that no traceback is shown.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

import pytest
from conftest import OLLAMA_MODEL, OPENAI_MODEL, SENTIMENT_ROWS, PromptWriter
from servers.jsonhttp import JsonHandler
from servers.openai_server import START_TIMEOUT, command, free_port, stop, wait_ready

from pytest_dspy_local.core.settings import PARSERS
from pytest_dspy_local.models.backends.base import ChatRequest
from pytest_dspy_local.models.backends.embedded import default_model_path
from pytest_dspy_local.models.backends.ollama import ollama_options
from pytest_dspy_local.models.backends.openai import sampling
from pytest_dspy_local.plugin.options import BACKEND, BASE_URL, CONCURRENCY, JSON_REPORT, MODEL, NO_CACHE

SMALL_CONTEXT = 512
ROW = '{"review": "Fine, nothing special", "sentiment": "positive"}'


def lit(text: str) -> str:
    """``text`` as an fnmatch pattern matching itself, except ``<*>``, which matches anything."""
    return "*".join(re.sub(r"([\[\]*?])", r"[\1]", part) for part in text.split("<*>"))


def outcome(result: pytest.RunResult, code: pytest.ExitCode, line: str, stream: str = "stdout") -> None:
    """The exit code, the exact line (an fnmatch pattern) and no traceback anywhere."""
    output = getattr(result, stream)
    assert result.ret == code, result.stdout.str()[-3000:]
    output.fnmatch_lines([line])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def server_args(base_url: str, *extra: str) -> list[str]:
    """Options that point the run at an OpenAI-compatible server serving ``smollm2``."""
    return [f"{BACKEND}=openai", f"{BASE_URL}={base_url}", f"{MODEL}={OPENAI_MODEL}", NO_CACHE, *extra]


@dataclass(frozen=True)
class LlamaServer:
    """A real ``python -m llama_cpp.server`` on loopback, its process at hand (to kill it)."""

    base_url: str
    port: int
    proc: subprocess.Popen[bytes]


@contextmanager
def llama_server(n_ctx: int) -> Iterator[LlamaServer]:
    """Start the real server on SmolLM2 with an ``n_ctx``-token context window; stop it after the block."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    argv = command(default_model_path(), port, OPENAI_MODEL)
    argv[argv.index("--n_ctx") + 1] = str(n_ctx)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_ready(proc, base_url, log, START_TIMEOUT)
            yield LlamaServer(base_url, port, proc)
        finally:
            stop(proc)  # a no-op on a killed one


@pytest.fixture(scope="module")
def small_context_server() -> Iterator[LlamaServer]:
    """The real llama_cpp.server with a 512-token context window."""
    with llama_server(SMALL_CONTEXT) as server:
        yield server


# What FaultyServer answers a chat request with, by fault: (HTTP status, body).
def _chat_body(content: str) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    return json.dumps({"id": "x", "object": "chat.completion", "model": OPENAI_MODEL, "choices": [choice]}).encode()


FAULTS = {
    "http_500": (500, json.dumps({"error": {"message": "decode failed: KV cache is full", "type": "server_error"}})
                 .encode()),
    "malformed_json": (200, b'{"choices": [{"message": {"role": "assist'),
    "empty_content": (200, _chat_body("")),
    "free_text": (200, _chat_body("The sentiment of this review is positive.")),
}


class FaultyServer(ThreadingHTTPServer):
    """Fault stand-in: an OpenAI-compatible loopback server that lists ``smollm2`` as a real one
    does, then answers every chat with ``fault`` (one of FAULTS, or ``"hang"``: never answers)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FaultyHandler)
        self.fault = "http_500"
        self.release = threading.Event()  # lets hung handlers go at teardown
        self.base_url = f"http://127.0.0.1:{self.server_port}/v1"


class FaultyHandler(JsonHandler):
    """Routes ``GET /v1/models`` and ``POST /v1/chat/completions``."""

    server: FaultyServer

    def do_GET(self) -> None:
        """The model list, as llama_cpp.server sends it."""
        entry = {"id": OPENAI_MODEL, "object": "model", "owned_by": "me", "permissions": []}
        self.send_json(200, {"object": "list", "data": [entry]})

    def do_POST(self) -> None:
        """The chat answer with the fault."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.fault == "hang":
            self.server.release.wait(30)
            self.close_connection = True
            return
        self.send_bytes(*FAULTS[self.server.fault])


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyServer]:
    """The fault stand-in, in a thread, for the module."""
    server = FaultyServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def run_with_fault(pytester: pytest.Pytester, write_prompt: PromptWriter, faulty: FaultyServer,
                   fault: str) -> pytest.RunResult:
    """The sentiment prompt run against the fault stand-in answering every chat with ``fault``."""
    write_prompt()
    faulty.fault = fault
    return pytester.runpytest(*server_args(faulty.base_url))


# --- model servers ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_server_down_at_start_names_the_url_and_the_fix(
    pytester: pytest.Pytester, write_prompt: PromptWriter, kind: str
) -> None:
    write_prompt()
    url = f"http://127.0.0.1:{free_port()}" + ("/v1" if kind == "openai" else "")
    model = OPENAI_MODEL if kind == "openai" else OLLAMA_MODEL
    result = pytester.runpytest(f"{BACKEND}={kind}", f"{BASE_URL}={url}", f"{MODEL}={model}")
    start = "start the server or fix the URL" if kind == "openai" else "start `ollama serve` or fix the URL"
    where = url if kind == "openai" else f"Ollama at {url}"
    outcome(result, pytest.ExitCode.TESTS_FAILED,
            lit(f"--dspy-base-url: cannot reach {where} (connection refused); {start}"))


KILLER = '''

import os, signal, socket, time

_scored = []


def metric(example, prediction, trace=None):
    _scored.append(example)
    if len(_scored) == 2:  # the server dies after answering two examples
        os.kill(int(os.environ["FAULTS_SERVER_PID"]), signal.SIGKILL)
        for _ in range(200):  # until its port refuses connections
            try:
                socket.create_connection(("127.0.0.1", int(os.environ["FAULTS_SERVER_PORT"])), 0.2).close()
            except OSError:
                break
            time.sleep(0.05)
    return example.sentiment == prediction.sentiment
'''


def test_server_killed_mid_run_names_the_example_and_says_restart_it(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real: llama_cpp.server is SIGKILLed after its second answer (by the prompt's metric, so the
    # moment is exact); the plugin had listed its models at the start.
    write_prompt(extra=KILLER, rows=[*SENTIMENT_ROWS, json.loads(ROW)])
    with llama_server(SMALL_CONTEXT) as server:
        monkeypatch.setenv("FAULTS_SERVER_PID", str(server.proc.pid))
        monkeypatch.setenv("FAULTS_SERVER_PORT", str(server.port))
        result = pytester.runpytest(*server_args(server.base_url, f"{CONCURRENCY}=1"))
        assert server.proc.wait(timeout=10) != 0, "the server was killed"
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"example prompt_sentiment.jsonl:3: openai server at {server.base_url} stopped answering mid-run "
        "(connection refused); it may have crashed or been stopped: check its log, restart it and run again"))


def test_http_500_is_one_line_with_the_servers_reason(
    pytester: pytest.Pytester, write_prompt: PromptWriter, faulty: FaultyServer
) -> None:
    # Stand-in: the server answers every chat with HTTP 500 (a crash inside a real one).
    result = run_with_fault(pytester, write_prompt, faulty, "http_500")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"example prompt_sentiment.jsonl:1: openai server at {faulty.base_url}: HTTP 500: "
        "decode failed: KV cache is full; see the server's log"))


def test_malformed_json_body_is_one_line(
    pytester: pytest.Pytester, write_prompt: PromptWriter, faulty: FaultyServer
) -> None:
    # Stand-in: HTTP 200 with a body cut off mid-JSON (a proxy or a crashing server).
    result = run_with_fault(pytester, write_prompt, faulty, "malformed_json")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"example prompt_sentiment.jsonl:1: --dspy-base-url: {faulty.base_url}/chat/completions did not answer "
        """JSON (it sent '{"choices": [{"message": {"role": "assist'); """
        "is it an OpenAI-compatible server? see its log"))


def test_empty_answers_are_parse_failures_that_say_so(
    pytester: pytest.Pytester, write_prompt: PromptWriter, faulty: FaultyServer
) -> None:
    # Stand-in: HTTP 200, finish_reason "stop", content "" (e.g. vLLM moving it all into reasoning).
    result = run_with_fault(pytester, write_prompt, faulty, "empty_content")
    outcome(result, pytest.ExitCode.TESTS_FAILED, "score 0.000 < 0.500 on 4 examples (4 parse failures)")
    result.stdout.fnmatch_lines([lit(
        f"    got:      unparseable output: the server at {faulty.base_url} returned an empty answer; see its log")])


def test_server_ignoring_the_json_schema_is_named_per_example(
    pytester: pytest.Pytester, write_prompt: PromptWriter, faulty: FaultyServer
) -> None:
    # Stand-in: free text in answer to a request that carried the output fields' JSON schema.
    result = run_with_fault(pytester, write_prompt, faulty, "free_text")
    outcome(result, pytest.ExitCode.TESTS_FAILED, "score 0.000 < 0.500 on 4 examples (4 parse failures)")
    result.stdout.fnmatch_lines([lit(
        f"    got:      unparseable output: the server at {faulty.base_url} ignored the JSON schema: the answer "
        "is not JSON ('The sentiment of this review is positive.'); use a server that honours `response_format` "
        "(llama.cpp, vLLM, Ollama, LM Studio)")])


def test_hung_server_times_out_naming_the_setting(
    pytester: pytest.Pytester, write_prompt: PromptWriter, faulty: FaultyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in: the server lists its models, then never answers a chat.
    monkeypatch.setenv("DSPY_LOCAL_TIMEOUT", "1")
    result = run_with_fault(pytester, write_prompt, faulty, "hang")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"example prompt_sentiment.jsonl:1: timeout: {faulty.base_url}/chat/completions did not answer within 1 s; "
        "raise `timeout` in [tool.dspy_local] or DSPY_LOCAL_TIMEOUT"))


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_wrong_model_name_says_what_is_served(
    pytester: pytest.Pytester, write_prompt: PromptWriter, request: pytest.FixtureRequest, kind: str
) -> None:
    # Real llama_cpp.server (it would answer any name in a chat: the model list is checked first);
    # the Ollama API stub answers with the real model.
    write_prompt()
    if kind == "openai":
        url = request.getfixturevalue("small_context_server").base_url
        line = f"--dspy-model: server at {url} does not serve 'smollm3'; it serves: {OPENAI_MODEL}"
    else:
        url = request.getfixturevalue("ollama_stub_url")
        line = f"--dspy-model: Ollama at {url} has no model 'smollm3'; run `ollama pull smollm3`"
    result = pytester.runpytest(f"{BACKEND}={kind}", f"{BASE_URL}={url}", f"{MODEL}=smollm3")
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(line))


def test_context_overflow_names_the_endpoint_the_window_and_the_fix(
    pytester: pytest.Pytester, write_prompt: PromptWriter, small_context_server: LlamaServer
) -> None:
    # Real: llama_cpp.server started with --n_ctx 512, one example far longer than that.
    long_review = {"review": "It arrived late and " * 150, "sentiment": "negative"}
    write_prompt(rows=[*SENTIMENT_ROWS[:2], long_review])
    result = pytester.runpytest(*server_args(small_context_server.base_url, f"{CONCURRENCY}=1"))
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"example prompt_sentiment.jsonl:3: openai server at {small_context_server.base_url}: HTTP 400: the prompt "
        "(<*> tokens) does not fit its context window of 512 tokens; start the server with a larger context, "
        "e.g. llama_cpp.server --n_ctx 8192 or llama-server -c 8192, or shorten the example or lower `max_tokens`"))


# --- answers and sampling --------------------------------------------------------------------


def test_answer_cut_off_at_max_tokens_says_which_setting_to_raise(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # Real: the embedded model, three tokens for a JSON object.
    write_prompt()
    pytester.makepyprojecttoml("[tool.dspy_local.prompts.sentiment]\nmax_tokens = 3\n")
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, "score 0.000 < 0.500 on 4 examples (4 parse failures)")
    result.stdout.fnmatch_lines([lit(
        "    got:      unparseable output: answer cut off at max_tokens=3: '{<*>'; "
        "raise `max_tokens` in [tool.dspy_local.prompts.sentiment] or [tool.dspy_local]")])


ORDER_MODULE = '''
import dspy


class OrderId(dspy.Signature):
    """Find the order number in a customer's message."""

    message: str = dspy.InputField()
    order_id: str = dspy.OutputField(desc="the order number, like A-12345")


program = dspy.Predict(OrderId)
threshold = 0.0


def metric(example, prediction, trace=None):
    return str(prediction.order_id).strip().upper() == example.order_id
'''
# Messages on which llama_cpp.server's default repeat_penalty (1.1) changed SmolLM2's answer at
# temperature 0 (e.g. '{message} {payment}' instead of the embedded model's 'G-51736').
ORDER_ROWS = [
    {"message": "the blender from order a-40218 arrived with a cracked jar", "order_id": "A-40218"},
    {"message": "Customer says order number is K 11847, wants to change the delivery address to 22 Elm St, "
                "Apt 5.", "order_id": "K-11847"},
    {"message": "I was charged $129.00 twice for order G-51736. Please refund one of the payments.",
     "order_id": "G-51736"},
]


def test_server_answers_equal_the_embedded_models_at_temperature_0(
    pytester: pytest.Pytester, write_prompt: PromptWriter, openai_url: str
) -> None:
    # Real: the same GGUF in-process and behind llama_cpp.server, the sampling settings sent explicitly.
    write_prompt("order", rows=ORDER_ROWS, module=ORDER_MODULE)
    answers = {}
    for name, args in {"embedded": [], "server": [f"{BACKEND}=openai", f"{BASE_URL}={openai_url}",
                                                  f"{MODEL}={OPENAI_MODEL}", NO_CACHE]}.items():
        pytester.runpytest(*args, f"{JSON_REPORT}={name}.json").assert_outcomes(passed=1)
        (prompt,) = json.loads((pytester.path / f"{name}.json").read_text())["prompts"]
        answers[name] = [(e["source"], e["got"], e["error"]) for e in prompt["examples"]]
    assert answers["server"] == answers["embedded"]


def test_every_sampling_setting_is_sent_to_each_server_backend() -> None:
    request = ChatRequest(messages=({"role": "user", "content": "hi"},))
    fields = {"top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty"}
    expected = {name: getattr(request, name) for name in fields}
    assert expected["repeat_penalty"] == 1.0  # llama_cpp.server's 1.1 and Ollama's 1.1 are overridden
    assert {k: v for k, v in sampling(request).items() if k in fields} == expected
    assert sampling(request)["repetition_penalty"] == 1.0  # vLLM's name for it
    assert {k: v for k, v in ollama_options(request).items() if k in fields} == expected


# --- data and model files --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "fixture"])
def test_rows_are_numbered_from_one_in_files_and_fixtures(
    pytester: pytest.Pytester, write_prompt: PromptWriter, where: str
) -> None:
    rows = [SENTIMENT_ROWS[0], {"text": "no review field", "sentiment": "negative"}]
    if where == "file":
        write_prompt(rows=rows)
        source = "prompt_sentiment.jsonl:2"
    else:
        fixture = f"\n\nimport pytest\n\n\n@pytest.fixture\ndef sentiment_dataset():\n    return {rows!r}\n"
        write_prompt(rows=None, extra=fixture)
        source = "sentiment_dataset:2"
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: example {source} lacks input field 'review' (inputs: review); "
        "add it to the row or set `inputs = (...)` in the module"))


def test_non_utf8_data_file_names_the_file_the_line_and_the_fix(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt()
    path = pytester.path / "prompt_sentiment.jsonl"
    path.write_bytes(path.read_bytes() + '{"review": "Très bien", "sentiment": "positive"}\n'.encode("latin-1"))
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED,
            f"{lit(str(path))}:5: not UTF-8 text (byte 0xe8: invalid continuation byte); save the file as UTF-8")


@pytest.mark.parametrize("damage", ["first_megabyte", "first_half", "last_byte_missing", "not_gguf"])
def test_unloadable_gguf_file_is_one_line(pytester: pytest.Pytester, write_prompt: PromptWriter, damage: str) -> None:
    # Real: the SmolLM2 GGUF cut short three ways; a web page saved as .gguf.
    write_prompt()
    path = pytester.path / f"{damage}.gguf"
    real = default_model_path().read_bytes()
    if damage == "not_gguf":
        path.write_text("<html>404 Not Found</html>\n")
    else:
        path.write_bytes({"first_megabyte": real[: 1 << 20], "first_half": real[: len(real) // 2],
                          "last_byte_missing": real[:-1]}[damage])
    refetch = "download it again (check its sha256) or give another .gguf as gguf:PATH"
    mb = f"{path.stat().st_size / 1e6:.1f} MB"
    line = {
        "first_megabyte": f"--dspy-model: {path} is truncated ({mb}, it ends inside its header); {refetch}",
        "first_half": f"--dspy-model: {path} is truncated ({mb}, its header needs at least 98.4 MB); {refetch}",
        # The header is whole, so only llama.cpp notices, when the first example asks the model.
        "last_byte_missing": f"example prompt_sentiment.jsonl:1: --dspy-model: llama.cpp could not load {path} "
                             f"({mb}): the file is damaged, or newer than this xllamacpp; download it again "
                             "(check its sha256), upgrade xllamacpp, or give another .gguf as gguf:PATH",
        "not_gguf": f"--dspy-model: {path} is not a GGUF model file; give a .gguf file as gguf:PATH",
    }[damage]
    result = pytester.runpytest(f"{MODEL}=gguf:{path}", NO_CACHE)
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(line))


# --- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [("float('nan')", "nan"), ("float('inf')", "inf"), ("-0.5", "-0.5"),
                                             ("1.5", "1.5")])
def test_metric_value_outside_0_to_1_names_the_example(
    pytester: pytest.Pytester, write_prompt: PromptWriter, value: str, shown: str
) -> None:
    metric = (f"\n\ndef metric(example, prediction, trace=None):\n"
              f"    return {value} if example.review.startswith('Broke') else 1.0\n")
    write_prompt(extra=metric)
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: metric returned {shown} for example prompt_sentiment.jsonl:2; "
        "return a score between 0 and 1 (or a bool)"))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_metric_raising_on_one_example_names_it(
    pytester: pytest.Pytester, write_prompt: PromptWriter, request: pytest.FixtureRequest, concurrency: int
) -> None:
    # Serial on the embedded model; 4 in flight on the real llama_cpp.server (thread-safe backend).
    metric = ("\n\ndef metric(example, prediction, trace=None):\n    if example.review.startswith('Great'):\n"
              "        raise ValueError('no label for this review')\n    return 1.0\n")
    write_prompt(extra=metric)
    args = [] if concurrency == 1 else server_args(request.getfixturevalue("small_context_server").base_url,
                                                   f"{CONCURRENCY}={concurrency}")
    result = pytester.runpytest(*args)
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{pytester.path / 'prompt_sentiment.py'}: metric raised ValueError: no label for this review on example "
        "prompt_sentiment.jsonl:3; fix the metric"))


# --- settings --------------------------------------------------------------------------------

# One bad value per [tool.dspy_local] key, and what the run stops with (after "<pyproject> [tool.dspy_local] ").
BAD_SETTINGS = {
    "model": ("3", "model must be a non-empty string, got 3"),
    "backend": ('""', "backend must be a non-empty string, got ''"),
    "base_url": ("8000", "base_url must be a non-empty string, got 8000"),
    "threshold": ("2", "threshold must be between 0 and 1 (a mean metric), got 2"),
    "max_examples": ("0", "max_examples must be at least 1, got 0"),
    "prompt_files": ("[]", "prompt_files must be a list of glob patterns such as [\"prompt_*.py\"], got []"),
    "timeout": ("0", "timeout must be greater than 0, got 0"),
    "max_tokens": ('"many"', "max_tokens must be a whole number, got 'many'"),
    "concurrency": ("-1", "concurrency must be at least 1, got -1"),
    "temperature": ("3.5", "temperature must be between 0 and 2, got 3.5"),
    "seed": ("1.5", "seed must be a whole number, got 1.5"),
    "n_ctx": ("64", "n_ctx must be at least 512 (tokens of context: DSPy's prompts alone take a few hundred; "
                    "8192 is the default), got 64"),
    "optimizer": ('"sgd"', "optimizer must be one of mipro, bootstrap, gepa, got 'sgd'"),
    "train_fraction": ("1", "train_fraction must be between 0 and 1 (exclusive), got 1"),
    "prompt_model": ('""', "prompt_model must be a non-empty string, got ''"),
    "prompt_backend": ("[]", "prompt_backend must be a non-empty string, got []"),
    "prompt_base_url": ("false", "prompt_base_url must be a non-empty string, got False"),
    "allow_hosts": ("[1]", "allow_hosts must be a list of hosts such as [\"gpu-box.lan\", \"10.0.0.0/8\"], got [1]"),
    "cache_dir": ('""', "cache_dir must be a non-empty string, got ''"),
    "strict_model": ('"perhaps"', "strict_model must be true or false, got 'perhaps'"),
    "strict_snapshots": ('"sometimes"', "strict_snapshots must be true or false, got 'sometimes'"),
    "require_transfer": ("2", "require_transfer must be true or false, got 2"),
    "alpha": ("0", "alpha must be between 0 and 1 (exclusive), got 0"),
    "min_delta": ("-0.1", "min_delta must be between 0 and 1, got -0.1"),
    "repeats": ("0", "repeats must be at least 1, got 0"),
    "optimize_alpha": ("1.5", "optimize_alpha must be between 0 and 1 (exclusive), got 1.5"),
    "optimize_min_gain": ("2", "optimize_min_gain must be between 0 and 1, got 2"),
    "optimize_budget": ('"ten minutes"', "optimize_budget must be a number of model calls (40) or a time "
                                         "(90s, 10m, 1h), got 'ten minutes'"),
}


def test_every_setting_has_a_bad_value_case() -> None:
    assert set(BAD_SETTINGS) == set(PARSERS)


@pytest.mark.parametrize("key", sorted(BAD_SETTINGS))
def test_bad_setting_in_pyproject_stops_the_run_naming_it(pytester: pytest.Pytester, key: str) -> None:
    value, message = BAD_SETTINGS[key]
    pyproject = pytester.makepyprojecttoml(f"[tool.dspy_local]\n{key} = {value}\n")
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.USAGE_ERROR, lit(f"ERROR: {pyproject} [tool.dspy_local] {message}"), "stderr")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("--dspy-concurrency=0", "--dspy-concurrency must be at least 1, got '0'"),
        ("DSPY_LOCAL_TIMEOUT=soon", "DSPY_LOCAL_TIMEOUT must be a number, got 'soon'"),
        ("[tool.dspy_local.prompts.sentiment]\nmax_tokens = 0",
         "{pyproject} [tool.dspy_local.prompts.sentiment] max_tokens must be at least 1, got 0"),
        ("[tool.dspy_local.prompts.sentiment]\nmodel = 'x'",
         "{pyproject}: unknown key 'model' in [tool.dspy_local.prompts.sentiment]; known keys: alpha, concurrency, "
         "max_examples, max_tokens, min_delta, optimize_alpha, optimize_budget, optimize_min_gain, repeats, "
         "require_transfer, seed, temperature, threshold"),
        ("--dspy-allow-hosts=10.0.0.0/33",
         "allow_hosts: allowed host '10.0.0.0/33': not a valid CIDR network such as 10.0.0.0/8; fix it in "
         "[tool.dspy_local] allow_hosts, DSPY_LOCAL_ALLOW_HOSTS or --dspy-allow-hosts"),
    ],
)
def test_bad_setting_on_the_command_line_environment_or_prompt_table_stops_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, message: str
) -> None:
    args: list[str] = []
    pyproject = pytester.path / "pyproject.toml"
    if where.startswith("--"):
        args.append(where)
    elif where.startswith("["):
        pyproject = pytester.makepyprojecttoml(where + "\n")
    else:
        monkeypatch.setenv(*where.split("=", 1))
    result = pytester.runpytest(*args)
    line = lit(message.format(pyproject=pyproject))
    outcome(result, pytest.ExitCode.USAGE_ERROR, f"ERROR: {line}", "stderr")

