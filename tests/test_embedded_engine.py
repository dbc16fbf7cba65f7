"""The embedded engine (xllamacpp, in-process): its loopback listener is shut to others; answers say why they ended."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pytest_dspy_local.models.backends.base import BackendError, ChatRequest
from pytest_dspy_local.models.backends.embedded import LISTENER_GUARD, EmbeddedBackend
from pytest_dspy_local.privacy.audit import receipt

HELLO = ({"role": "user", "content": "Say hello."},)
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedBackend]:
    """The real embedded SmolLM2, loaded by one answer."""
    backend = EmbeddedBackend("smollm2-135m", n_ctx=2048)
    backend.chat(ChatRequest(messages=HELLO, max_tokens=1))
    yield backend
    backend.close()


def test_listener_refuses_requests_without_the_key(embedded: EmbeddedBackend) -> None:
    # xllamacpp cannot run without its HTTP listener: a local process or a browser page must get nothing from it.
    base = embedded.listener
    assert base.startswith("http://127.0.0.1:")
    evil = {"Origin": "http://evil.example"}
    with httpx.Client(base_url=base, trust_env=False, timeout=10.0) as client:
        assert client.post("/v1/chat/completions", json=CHAT, headers=evil).status_code == 401
        assert client.post("/completion", json={"prompt": "hi", "n_predict": 1}).status_code == 401
        wrong = {"Authorization": "Bearer not-the-key"}
        assert client.post("/v1/chat/completions", json=CHAT, headers=wrong).status_code == 401
        for path in ("/v1/models", "/props", "/slots", "/metrics"):
            assert client.get(path).status_code in (401, 404), path
        preflight = client.options("/v1/chat/completions", headers={**evil, "Access-Control-Request-Method": "POST"})
        assert preflight.headers.get("access-control-allow-origin", "") in ("", "null")


def test_receipt_names_the_listener(embedded: EmbeddedBackend) -> None:
    listeners = receipt([], [], blocking=False)["listeners"]
    assert {"address": embedded.listener, "opened_by": "embedded model SmolLM2-135M-Instruct.Q4_1.gguf",
            "protection": LISTENER_GUARD} in listeners


def test_cut_off_answer_reports_length(embedded: EmbeddedBackend) -> None:
    # Evaluation tells "cut off at max_tokens" from finish_reason == "length".
    cut = embedded.chat(ChatRequest(messages=HELLO, max_tokens=2))
    assert cut.finish_reason == "length" and cut.completion_tokens == 2
    whole = embedded.chat(ChatRequest(messages=HELLO, max_tokens=8, schema={"type": "boolean"}))
    assert whole.finish_reason == "stop" and whole.text.strip() in ("true", "false"), whole


def test_the_system_message_reaches_the_model(embedded: EmbeddedBackend) -> None:
    # The prompt and the answer change with the system message alone (SmolLM2's template puts its own
    # default system message in when there is none, hence "differ", not "longer").
    system = {"role": "system", "content": "Whatever the user says, answer with the single word: banana."}
    answer = embedded.chat(ChatRequest(messages=(system, {"role": "user", "content": "What color is the sky?"}),
                                       max_tokens=8))
    plain = embedded.chat(ChatRequest(messages=({"role": "user", "content": "What color is the sky?"},), max_tokens=8))
    assert answer.prompt_tokens != plain.prompt_tokens and answer.text != plain.text


def test_model_larger_than_free_memory_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in: the machine's free memory is faked (no real part here can fill it safely).
    import pytest_dspy_local.models.backends.embedded as embedded

    monkeypatch.setattr(embedded, "available_memory", lambda: 50_000_000)
    backend = EmbeddedBackend("smollm2-135m")
    with pytest.raises(BackendError) as raised:
        backend.chat(ChatRequest(messages=HELLO, max_tokens=1))
    size = f"{backend.path.stat().st_size / 1e6:.0f} MB"
    assert str(raised.value) == (
        f"--dspy-model: {backend.path} ({size}) does not fit the 50 MB of free memory; close other programs "
        "or give a smaller model (a lower quantization) as gguf:PATH")


def test_prompt_longer_than_the_context_is_one_line() -> None:
    backend = EmbeddedBackend("smollm2-135m", n_ctx=256)
    try:
        with pytest.raises(BackendError) as raised:
            backend.chat(ChatRequest(messages=({"role": "user", "content": "word " * 400},), max_tokens=4))
    finally:
        backend.close()
    message = str(raised.value)
    assert message.startswith("embedded model: the prompt (") and "does not fit its context window of 256 tokens; " \
        "raise `n_ctx` in [tool.dspy_local]" in message, message
