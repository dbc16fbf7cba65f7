"""The transfer target (Gemma 3 270M behind a real ``llama_cpp.server``) answers the plugin's openai backend."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from servers.target_model import ALIAS, serve_target

from pytest_dspy_local.models.backends.base import ChatRequest
from pytest_dspy_local.models.backends.openai import OpenAIBackend

TRIAGE = {
    "type": "object",
    "properties": {"team": {"type": "string", "enum": ["billing", "tech", "account"]}, "urgent": {"type": "boolean"}},
    "required": ["team", "urgent"],
}
SYSTEM = {"role": "system", "content": "Route the ticket to the team that handles it: billing, tech or account."}
TICKET = {"role": "user", "content": "Ticket: I was charged twice for my subscription this month."}


@pytest.fixture(scope="module")
def target() -> Iterator[OpenAIBackend]:
    """An OpenAIBackend on a freshly started target server."""
    with serve_target() as url:
        backend = OpenAIBackend(ALIAS, base_url=url, timeout=60)
        yield backend
        backend.close()


def test_target_answers_json_with_the_schema_keys(target: OpenAIBackend) -> None:
    assert target.info().model == ALIAS
    result = target.chat(ChatRequest(messages=(SYSTEM, TICKET), schema=TRIAGE, max_tokens=40))
    answer = json.loads(result.text)
    assert set(answer) == {"team", "urgent"} and answer["team"] in {"billing", "tech", "account"}


def test_target_sees_the_system_message(target: OpenAIBackend) -> None:
    # llama-cpp-python's own "gemma" chat format drops system messages, where DSPy puts the instructions.
    alone = target.chat(ChatRequest(messages=(TICKET,), max_tokens=1))
    with_system = target.chat(ChatRequest(messages=(SYSTEM, TICKET), max_tokens=1))
    assert with_system.prompt_tokens > alone.prompt_tokens + 10
