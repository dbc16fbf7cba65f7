"""The server backends against real servers on loopback, each started once per session.

OpenAIBackend talks to llama-cpp-python's real ``llama_cpp.server``; OllamaBackend
talks to ``servers.ollama_stub`` (no Ollama server installs here), which answers
with the same real SmolLM2 model. Only a hang is faked: see ``silent_server``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ollama
import pytest
from conftest import OLLAMA_MODEL, OPENAI_MODEL
from servers.openai_server import free_port

from pytest_dspy_local.models.backends.base import Backend, BackendError, ChatRequest
from pytest_dspy_local.models.backends.embedded import default_model_path, file_digest
from pytest_dspy_local.models.backends.ollama import OllamaBackend, ollama_url
from pytest_dspy_local.models.backends.openai import OpenAIBackend

SENTIMENT = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["sentiment"],
}
# Values the model would never write unprompted: only constrained decoding produces them.
ODD_ENUM = ["zebra-42", "quokka-7"]
TIMEOUT_SETTING = r"raise `timeout` in \[tool.dspy_local\] or DSPY_LOCAL_TIMEOUT"


def ask(text: str, max_tokens: int = 40, schema: dict[str, Any] | None = SENTIMENT) -> ChatRequest:
    """A one-turn request at temperature 0."""
    messages = ({"role": "user", "content": f"Classify the sentiment of this review: {text}"},)
    return ChatRequest(messages=messages, schema=schema, max_tokens=max_tokens)


class SilentServer:
    """Fault stand-in: accepts connections, records what arrives, never answers.

    No real server hangs on demand; to a client, this is what a stalled one looks like.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.received = bytearray()
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(2.0)
            self._open.append(conn)  # held open, unanswered, until close()
            self.received += conn.recv(65536)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in [*self._open, self.sock]:
            conn.close()


@contextmanager
def silent_server() -> Iterator[SilentServer]:
    """A SilentServer for the ``with`` block."""
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that was just free: connecting to it is refused."""
    return free_port()


@pytest.fixture
def openai_backend(openai_url: str) -> Iterator[OpenAIBackend]:
    """An OpenAIBackend on the session's llama_cpp.server."""
    backend = OpenAIBackend(OPENAI_MODEL, base_url=openai_url, timeout=30)
    yield backend
    backend.close()


@pytest.fixture
def ollama_backend(ollama_stub_url: str) -> Iterator[OllamaBackend]:
    """An OllamaBackend on the session's stub."""
    backend = OllamaBackend(OLLAMA_MODEL, base_url=ollama_stub_url, timeout=30)
    yield backend
    backend.close()


@pytest.fixture(params=["openai", "ollama"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each server backend in turn, for the checks both must pass."""
    chosen: Backend = request.getfixturevalue(f"{request.param}_backend")
    return chosen


def test_openai_info_digest_is_a_stable_server_identity(
    openai_backend: OpenAIBackend, openai_url: str
) -> None:
    info = openai_backend.info()
    fresh = OpenAIBackend(OPENAI_MODEL, base_url=openai_url, timeout=30)
    assert fresh.info().digest == info.digest == openai_backend.info().digest
    fresh.close()
    assert info.digest.startswith("server:") and len(info.digest) == len("server:") + 64
    assert (info.backend, info.model, info.endpoint) == ("openai", OPENAI_MODEL, openai_url)


def test_ollama_info_digest_is_the_gguf_sha256(ollama_backend: OllamaBackend, ollama_stub_url: str) -> None:
    info = ollama_backend.info()
    assert info.digest == file_digest(default_model_path())
    assert (info.backend, info.model, info.endpoint) == ("ollama", OLLAMA_MODEL, ollama_stub_url)
    assert info.details["quantization_level"] == "Q4_1"


@pytest.mark.parametrize("review", ["I love it, works perfectly", "Broke after two days, terrible"])
def test_schema_chat_returns_json_in_the_enum(backend: Backend, review: str) -> None:
    result = backend.chat(ask(review))
    assert json.loads(result.text)["sentiment"] in ("positive", "negative")
    assert result.finish_reason == "stop"


def test_schema_constrains_decoding(backend: Backend) -> None:
    schema = {"type": "object", "properties": {"label": {"enum": ODD_ENUM}}, "required": ["label"]}
    result = backend.chat(ask("It was fine.", schema=schema))
    assert json.loads(result.text)["label"] in ODD_ENUM


def test_max_tokens_is_honoured(backend: Backend) -> None:
    assert backend.chat(ask("Great value", max_tokens=40)).completion_tokens <= 40
    started = time.perf_counter()
    story = ChatRequest(messages=({"role": "user", "content": "Write a very long story."},), max_tokens=5)
    result = backend.chat(story)
    assert time.perf_counter() - started < 20  # uncapped, it can run to the end of the context
    assert (result.finish_reason, result.completion_tokens <= 5) == ("length", True)


def test_server_error_is_one_line_with_status_and_server_text(backend: Backend) -> None:
    too_long = ChatRequest(messages=({"role": "user", "content": "word " * 6000},))
    refusal = r" at http://127\.0\.0\.1:\d+(/v1)?: HTTP (400|500): .*context"
    with pytest.raises(BackendError, match=refusal) as caught:
        backend.chat(too_long)
    assert "\n" not in str(caught.value)


def test_openai_unknown_model_lists_what_is_served(openai_url: str) -> None:
    backend = OpenAIBackend("no-such-model", base_url=openai_url, timeout=30)
    served = r"--dspy-model: .* does not serve 'no-such-model'; it serves: smollm2$"
    with pytest.raises(BackendError, match=served):
        backend.info()


def test_openai_base_url_without_v1_is_explained(openai_url: str) -> None:
    backend = OpenAIBackend(OPENAI_MODEL, base_url=openai_url.removesuffix("/v1"), timeout=30)
    with pytest.raises(BackendError, match=r"--dspy-base-url: .* answered 404 .*must end in /v1"):
        backend.info()


@pytest.mark.parametrize("call", ["info", "chat"])
def test_ollama_unknown_model_says_how_to_pull_it(ollama_stub_url: str, call: str) -> None:
    backend = OllamaBackend("nope:1b", base_url=ollama_stub_url, timeout=30)
    hint = r"--dspy-model: Ollama at .* has no model 'nope:1b'; run `ollama pull nope:1b`$"
    with pytest.raises(BackendError, match=hint):
        backend.info() if call == "info" else backend.chat(ask("fine"))


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_unreachable_server_names_base_url(closed_port: int, kind: str) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    backend: Backend = (
        OpenAIBackend(OPENAI_MODEL, base_url=url + "/v1", timeout=5)
        if kind == "openai"
        else OllamaBackend(OLLAMA_MODEL, base_url=url, timeout=5)
    )
    refused = r"^--dspy-base-url: cannot reach .* \(connection refused\); start"
    with pytest.raises(BackendError, match=refused):
        backend.info()


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_stalled_server_times_out_naming_the_setting_and_sends_no_cloud_key(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "cloud-secret")
    monkeypatch.setenv("OLLAMA_API_KEY", "cloud-secret")
    monkeypatch.setenv("DSPY_LOCAL_API_KEY", "local-key")
    with silent_server() as stalled:
        url = f"http://127.0.0.1:{stalled.port}"
        backend: Backend = (
            OpenAIBackend(OPENAI_MODEL, base_url=url + "/v1", timeout=0.5)
            if kind == "openai"
            else OllamaBackend(OLLAMA_MODEL, base_url=url, timeout=0.5)
        )
        started = time.perf_counter()
        stalled_message = rf"^timeout: .* did not answer within 0.5 s; {TIMEOUT_SETTING}$"
        with pytest.raises(BackendError, match=stalled_message):
            backend.chat(ask("fine"))
        assert time.perf_counter() - started < 5
    assert b"cloud-secret" not in stalled.received
    assert b"authorization: bearer local-key" in bytes(stalled.received).lower()


@pytest.mark.parametrize("form", ["url", "host:port"])
def test_ollama_host_env_is_used_without_base_url(
    ollama_stub_url: str, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    host = ollama_stub_url if form == "url" else ollama_stub_url.removeprefix("http://")
    monkeypatch.setenv("OLLAMA_HOST", host)
    backend = OllamaBackend(OLLAMA_MODEL, base_url=None, timeout=30)
    assert backend.host == ollama_stub_url
    assert backend.info().endpoint == ollama_stub_url


def test_ollama_default_host_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert OllamaBackend(OLLAMA_MODEL, base_url=None, timeout=1).host == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        (":8080", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("http://localhost", "http://localhost:80"),
        ("http://[::1]:5/p/", "http://[::1]:5/p"),
    ],
)
def test_ollama_url_follows_the_clients_rules(raw: str, url: str) -> None:
    assert ollama_url(raw) == url


def test_ollama_stub_streams_ndjson_like_ollama(ollama_stub_url: str) -> None:
    client = ollama.Client(host=ollama_stub_url, trust_env=False)
    messages = [{"role": "user", "content": "Say hi"}]
    parts = list(client.chat(OLLAMA_MODEL, messages, stream=True, options={"num_predict": 8}))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].eval_count == len(parts) - 1 <= 8
    assert "".join(p.message.content or "" for p in parts).strip()
