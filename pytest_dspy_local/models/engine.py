"""Adapts any Backend to DSPy 3.4's LM engine API, so DSPy's cache, history,
usage tracking and retries keep working for local models."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.evaluation import Answer, heard
from pytest_dspy_local.core.results import Traffic
from pytest_dspy_local.models.backends.base import Backend, ChatRequest, ChatResult, ModelInfo
from pytest_dspy_local.models.cache import ResponseCache, request_key

if TYPE_CHECKING:
    import dspy
    from dspy.lm15 import Request, Response

_FINISH = {"stop": "stop", "length": "length", "eos": "stop"}


def _text_of(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "".join(getattr(part, "text", "") for part in system)


def _schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format:
        return None
    schema = response_format.get("schema")
    if schema is None and "json_schema" in response_format:
        schema = response_format["json_schema"].get("schema")
    return dict(schema) if isinstance(schema, dict) else {"type": "object"}


class BackendEngine:
    """A DSPy engine object around one Backend."""

    # DSPy's JSONAdapter sends the output fields' JSON schema only to engines
    # that declare both of these (dspy/clients/lm.py, DSPy 3.4); the schema drives constrained decoding.
    supports_response_schema = True
    supported_params = frozenset({"response_format"})

    def __init__(
        self,
        backend: Backend,
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        cache: ResponseCache | None = None,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.model_id = ""  # set once the model's digest is known; part of every cache key
        self.endpoint = ""  # where the calls go: "in-process" or the server URL
        self.counter = Traffic()
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        self._lock = threading.Lock()
        self._draws = 0

    def _seed(self, config: Any, temperature: float) -> int:
        if config.seed is not None:
            return int(config.seed)
        if temperature <= 0:
            return self.seed
        # Sampling without a seed of its own (e.g. MIPROv2's proposals): a fixed seed would
        # give identical candidates. Draws are numbered in call order, so a re-run in the same
        # order reproduces them (and hits the cache).
        with self._lock:
            self._draws += 1
            return self.seed + self._draws

    def _chat_request(self, request: Request) -> ChatRequest:
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": _text_of(request.system)})
        messages.extend({"role": str(m.role), "content": m.text or ""} for m in request.messages)
        config = request.config
        temperature = self.temperature if config.temperature is None else config.temperature
        return ChatRequest(
            messages=tuple(messages),
            schema=_schema_of(config.response_format),
            max_tokens=config.max_tokens or self.max_tokens,
            temperature=temperature,
            seed=self._seed(config, temperature),
        )

    def complete(self, request: Request) -> Response:
        """Answer one DSPy request through the backend."""
        from dspy.lm15 import Message, Response, TextPart, Usage

        chat = self._chat_request(request)
        result = self.chat(chat)
        # Evaluation turns a parse failure into "cut off at max_tokens=N" (or empty, or not JSON) from this.
        heard(Answer(result.text, result.finish_reason, chat.max_tokens, chat.schema is not None, self._answered_by()))
        usage = Usage(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens)
        finish: Any = _FINISH.get(result.finish_reason, "stop")
        message = Message.assistant([TextPart(result.text)])
        return Response(id=None, model=request.model, message=message, finish_reason=finish, usage=usage)

    def _answered_by(self) -> str:
        if self.endpoint == "in-process":
            return "the embedded model"
        return f"the server at {self.endpoint}" if self.endpoint else "the model"

    def chat(self, chat: ChatRequest) -> ChatResult:
        """Answer from the cache, or from the backend (and cache the answer)."""
        key = request_key(self.model_id, chat) if self.cache is not None else ""
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            with self._lock:
                self.counter += Traffic(cached=1)
            return cached
        result = self.backend.chat(chat)
        if self.cache is not None:
            self.cache.put(key, result)
        with self._lock:
            self.counter += Traffic(calls=1, prompt_tokens=result.prompt_tokens,
                                    completion_tokens=result.completion_tokens)
        return result

    def stream(self, request: Request) -> Any:
        """DSPy streaming: one whole response as events."""
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Release the backend and the cache."""
        self.backend.close()
        if self.cache is not None:
            self.cache.close()


def lm_model_name(info: ModelInfo) -> str:
    """The DSPy model string; it carries the digest because DSPy's cache key omits the endpoint."""
    digest = info.digest.replace(":", "-")
    return f"local/{info.backend}-{info.model}-{digest}"


def make_lm(engine: BackendEngine, info: ModelInfo) -> dspy.LM:
    """A ``dspy.LM`` that runs on ``engine``.

    DSPy's own cache is off: the engine's JSON cache replaces it (no pickles,
    exact hit counts); DSPy's history, usage and callbacks still work.
    """
    import dspy

    engine.model_id = lm_model_name(info)
    engine.endpoint = info.endpoint
    return dspy.LM(
        engine.model_id,
        engine=engine,
        cache=False,
        max_tokens=engine.max_tokens,
        temperature=engine.temperature,
        num_retries=0,
    )
