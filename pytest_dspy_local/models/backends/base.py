"""The one interface every model backend implements, and what it returns.

A backend turns chat messages into text. It knows nothing about DSPy: the DSPy
engine in ``pytest_dspy_local.models.engine`` adapts any backend to DSPy's LM API, so
a new backend (a conftest.py hook implementation) is a small class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pytest_dspy_local.core.results import ModelIdentity, short_digest
from pytest_dspy_local.errors import BackendError

__all__ = ["Backend", "BackendError", "ChatRequest", "ChatResult", "ModelInfo"]

JsonSchema = dict[str, Any]
# What the server backends share: the key variable they send (cloud keys are never read),
# the fix a timeout message names, and how long a server's error text may run.
API_KEY_ENV = "DSPY_LOCAL_API_KEY"
TIMEOUT_HINT = "raise `timeout` in [tool.dspy_local] or DSPY_LOCAL_TIMEOUT"
MAX_ERROR_CHARS = 300
# Requests in flight per model when a thread-safe backend's user sets no `concurrency`:
# servers that batch (vLLM, llama-server --parallel, Ollama with OLLAMA_NUM_PARALLEL) gain
# almost linearly up to their slot count; past it, requests queue at the server, where their
# wait counts against `timeout`. 8 fills a typical Ollama or single-GPU vLLM box and keeps
# that queueing short on one that serves one request at a time (see bench/README.md).
SERVER_CONCURRENCY = 8
# What a context-window refusal says, by server: llama-cpp-python's llama_cpp.server and vLLM
# ("This model's maximum context length is 512 tokens"), llama.cpp's llama-server ("exceeds the
# available context size (512 tokens)"), and llama.cpp itself ("exceed context window of 512").
_CONTEXT_REFUSAL = re.compile(
    r"context[ _](length|window|size)|exceed_context_size|maximum context", re.IGNORECASE
)
_CONTEXT_SIZE = re.compile(
    r"maximum context length is (\d+)|context window of (\d+)|context size \((\d+) tokens\)|\"n_ctx\": ?(\d+)",
    re.IGNORECASE,
)
_PROMPT_TOKENS = re.compile(r"(\d+) in the messages|Requested tokens \((\d+)\)|request \((\d+) tokens\)", re.IGNORECASE)
SHORTER = "or shorten the example or lower `max_tokens`"


def is_thread_safe(backend: object) -> bool:
    """Does the backend declare that several threads may call ``chat`` at once?"""
    return bool(getattr(backend, "thread_safe", False))


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion, already rendered by DSPy's adapter.

    ``messages`` are ``{"role": ..., "content": ...}`` dicts, system first.
    ``schema`` is the JSON schema the answer must match (constrained decoding),
    or None for free text.

    The sampling fields are sent explicitly to every backend whose API takes them, so a
    server's own defaults cannot make it answer differently from the embedded model
    (llama_cpp.server's ``repeat_penalty`` is 1.1, Ollama's ``top_p`` 0.9 and ``min_p`` 0).
    Their values are llama.cpp's in-process defaults, which the embedded model has always used.
    """

    messages: tuple[dict[str, str], ...]
    schema: JsonSchema | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def sampling(self) -> dict[str, Any]:
        """Every sampling setting under llama.cpp's names (each backend adds what its API calls differently)."""
        return {
            "temperature": self.temperature,
            "seed": self.seed,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
        }


@dataclass(frozen=True)
class ChatResult:
    """The model's answer and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ModelInfo:
    """What the run header, the cache key and the audit receipt say about a model.

    ``digest`` identifies the weights (``sha256:<hex>`` of a GGUF file, or the
    digest a server reports); ``endpoint`` is ``in-process`` or the base URL.
    """

    backend: str
    model: str
    digest: str
    endpoint: str
    details: dict[str, str] = field(default_factory=dict)

    @property
    def short_digest(self) -> str:
        """The digest cut for display."""
        return short_digest(self.digest)

    def identity(self) -> ModelIdentity:
        """What results record about this model."""
        return ModelIdentity(self.backend, self.model, self.digest, self.endpoint)


def connect_reason(exc: BaseException) -> str:
    """Why a connection failed; the ollama client hides httpx's error behind a generic one."""
    cause = exc.__context__ if isinstance(exc, ConnectionError) and exc.__context__ else exc
    return "connection refused" if "refused" in str(cause).lower() else str(cause)


def _number(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.search(text)
    return next((g for g in found.groups() if g), None) if found else None


def context_refusal(where: str, body: str, fix: str) -> BackendError | None:
    """A one-line error for a refusal of a prompt longer than the context window, else None.

    ``body`` is the refusal as the server sent it: llama-server puts the window's size in a JSON field.
    """
    if not _CONTEXT_REFUSAL.search(body):
        return None
    size, prompt = _number(_CONTEXT_SIZE, body), _number(_PROMPT_TOKENS, body)
    need = f" ({prompt} tokens)" if prompt else ""
    window = f"its context window of {size} tokens" if size else "its context window"
    return BackendError(f"{where}: the prompt{need} does not fit {window}; {fix}")


@runtime_checkable
class Backend(Protocol):
    """A local model.

    ``chat`` is called from one thread at a time unless the class sets ``thread_safe = True``
    (an optional attribute): then the plugin keeps up to ``concurrency`` calls in flight.
    """

    def info(self) -> ModelInfo:
        """Describe the model; may contact the server once (digest lookup)."""
        ...

    def chat(self, request: ChatRequest) -> ChatResult:
        """Answer one chat request; raise BackendError on failure."""
        ...

    def close(self) -> None:
        """Release the model or connection."""
        ...
