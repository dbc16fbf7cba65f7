"""The ollama backend: a model served by a local Ollama, through the ``ollama`` client."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import ollama

from pytest_dspy_local.models.backends.base import (
    API_KEY_ENV,
    MAX_ERROR_CHARS,
    SHORTER,
    TIMEOUT_HINT,
    BackendError,
    ChatRequest,
    ChatResult,
    ModelInfo,
    connect_reason,
    context_refusal,
)

HOST_ENV = "OLLAMA_HOST"
DEFAULT_PORT = 11434
# Ollama itself cuts a prompt to the model's context (keeping its end) where llama.cpp refuses it.
CONTEXT_FIX = f"give the model a larger context (OLLAMA_CONTEXT_LENGTH=8192 ollama serve), {SHORTER}"


def ollama_options(request: ChatRequest) -> dict[str, Any]:
    """Ollama's ``options``, every sampling setting explicit: its own top_p 0.9, min_p 0, repeat_penalty 1.1 differ."""
    return {"num_predict": request.max_tokens, **request.sampling()}


def ollama_url(raw: str) -> str:
    """A full URL from an ``OLLAMA_HOST``-style value: ``host``, ``host:port``, ``:port`` or a URL.

    Same rules as the ``ollama`` client, so the endpoint we report is the one it dials.
    """
    scheme, sep, rest = raw.strip().partition("://")
    if not sep:
        scheme, rest = "http", raw.strip()
    default_port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT) if sep else DEFAULT_PORT
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    try:
        port = split.port or default_port
    except ValueError:
        raise BackendError(
            f"--dspy-base-url: {raw!r} has an invalid port; use e.g. http://127.0.0.1:11434"
        ) from None
    host = split.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host  # urlsplit strips IPv6 brackets
    path = split.path.strip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def resolve_host(base_url: str | None, environ: Mapping[str, str]) -> str:
    """``--dspy-base-url``, else ``OLLAMA_HOST``, else Ollama's default address."""
    return ollama_url(base_url or environ.get(HOST_ENV) or f"127.0.0.1:{DEFAULT_PORT}")


def with_tag(model: str) -> str:
    """The name Ollama lists a model under: ``:latest`` is implied when no tag is given."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


class OllamaBackend:
    """A model served by Ollama; the digest is the one Ollama lists for it."""

    thread_safe = True  # the ollama client is an httpx.Client; Ollama batches up to OLLAMA_NUM_PARALLEL

    def __init__(self, model: str, *, base_url: str | None, timeout: float) -> None:
        self.model = model
        self.host = resolve_host(base_url, os.environ)
        # The setting a wrong address is fixed in, for messages about it.
        self.setting = HOST_ENV if not base_url and os.environ.get(HOST_ENV) else "--dspy-base-url"
        self.timeout = timeout
        self._api_key = os.environ.get(API_KEY_ENV)
        # The client would add OLLAMA_API_KEY (an ollama.com cloud key) to every request;
        # the hook replaces it with ours or removes it. trust_env=False keeps proxies out.
        self._client = ollama.Client(
            host=self.host, timeout=timeout, trust_env=False, event_hooks={"request": [self._authorize]}
        )
        self._info: ModelInfo | None = None

    def _authorize(self, request: httpx.Request) -> None:
        """Send DSPY_LOCAL_API_KEY if set, and never a key read from elsewhere."""
        request.headers.pop("authorization", None)
        if self._api_key:
            request.headers["authorization"] = f"Bearer {self._api_key}"

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn client and transport failures into one-line BackendErrors."""
        try:
            yield
        except ollama.ResponseError as exc:
            raise self._response_error(exc) from None
        except httpx.TimeoutException:
            raise BackendError(
                f"timeout: Ollama at {self.host} did not answer within {self.timeout:g} s; {TIMEOUT_HINT}"
            ) from None
        except (ConnectionError, httpx.TransportError) as exc:
            raise self._unreachable(exc) from None
        except httpx.HTTPError as exc:
            raise BackendError(f"--dspy-base-url: request to Ollama at {self.host} failed ({exc})") from None

    def _unreachable(self, exc: Exception) -> BackendError:
        """Why a request got no answer: Ollama not started, or gone since the start of the run."""
        reason = connect_reason(exc)
        if self._info is not None:  # it answered /api/tags when the run started
            return BackendError(
                f"Ollama at {self.host} stopped answering mid-run ({reason}); "
                "it may have crashed or been stopped: check its log, restart it and run again"
            )
        return BackendError(
            f"{self.setting}: cannot reach Ollama at {self.host} ({reason}); start `ollama serve` or fix the URL"
        )

    def _response_error(self, exc: ollama.ResponseError) -> BackendError:
        """An error Ollama answered with, on one line."""
        if exc.status_code == 404 and "not found" in str(exc.error).lower():
            return self._missing_model()
        where = f"Ollama at {self.host}: HTTP {exc.status_code}"
        refusal = context_refusal(where, str(exc.error), CONTEXT_FIX)
        text = " ".join(str(exc.error).split())[:MAX_ERROR_CHARS]
        return refusal or BackendError(f"{where}: {text}; see Ollama's log")

    def _missing_model(self) -> BackendError:
        return BackendError(
            f"--dspy-model: Ollama at {self.host} has no model {self.model!r}; run `ollama pull {self.model}`"
        )

    def _list(self) -> Any:
        """``GET /api/tags``; a 404 or a body that is not Ollama's means no Ollama there (not a missing model)."""
        try:
            with self._translate():
                return self._client.list()
        except BackendError as exc:
            if not str(exc).startswith("--dspy-model:"):  # _translate reads a 404 as a missing model
                raise
            status = "answered 404"
        except ValueError:  # the ollama client's parse of a body that is not its JSON (pydantic's errors too)
            status = "did not answer Ollama's JSON"
        raise BackendError(f"{self.setting}: {self.host}/api/tags {status}: no Ollama server there; fix the URL "
                           f"(Ollama listens on http://127.0.0.1:{DEFAULT_PORT} unless OLLAMA_HOST says otherwise)")

    def info(self) -> ModelInfo:
        """Look the model up in ``/api/tags`` (once) for its digest and details."""
        if self._info is None:
            listing = self._list()
            wanted = with_tag(self.model)
            entry = next((m for m in listing.models if m.model in (self.model, wanted)), None)
            if entry is None or not entry.digest:
                raise self._missing_model()
            details = entry.details.model_dump(exclude_none=True) if entry.details else {}
            shown = {k: str(v) for k, v in details.items() if isinstance(v, (str, int, float))}
            digest = "sha256:" + entry.digest.removeprefix("sha256:")
            self._info = ModelInfo("ollama", self.model, digest, self.host, shown)
        return self._info

    def chat(self, request: ChatRequest) -> ChatResult:
        """Answer one chat request; a schema goes in ``format`` so Ollama constrains decoding."""
        options = ollama_options(request)
        with self._translate():
            response = self._client.chat(
                model=self.model,
                messages=list(request.messages),
                format=request.schema,
                options=options,
                stream=False,
            )
        return ChatResult(
            text=response.message.content or "",
            prompt_tokens=response.prompt_eval_count or 0,
            completion_tokens=response.eval_count or 0,
            finish_reason=response.done_reason or "stop",
        )

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()
