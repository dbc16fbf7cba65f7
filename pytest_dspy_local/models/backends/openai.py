"""The openai backend: any server speaking OpenAI's chat-completions API.

Tested against llama-cpp-python's ``python -m llama_cpp.server``; written to the
request shapes vLLM, LM Studio and llama.cpp's own ``llama-server`` document.
``base_url`` is taken as given and must end in ``/v1``, as with OpenAI's SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any

import httpx

from pytest_dspy_local.models.backends.base import (
    API_KEY_ENV,
    MAX_ERROR_CHARS,
    SHORTER,
    TIMEOUT_HINT,
    BackendError,
    ChatRequest,
    ChatResult,
    JsonSchema,
    ModelInfo,
    connect_reason,
    context_refusal,
)

# vLLM stamps these with the request time and random ids on every GET /models.
VOLATILE_MODEL_KEYS = frozenset({"created", "permission"})
CONTEXT_FIX = (
    f"start the server with a larger context, e.g. llama_cpp.server --n_ctx 8192 or llama-server -c 8192, {SHORTER}"
)


def sampling(request: ChatRequest) -> dict[str, Any]:
    """The sampling settings, sent explicitly: a server's defaults differ from the embedded model's.

    llama.cpp's servers and LM Studio read ``repeat_penalty``, vLLM ``repetition_penalty``
    (each ignores the other's name); ``top_k`` and ``min_p`` are extensions all of them honour.
    """
    return {**request.sampling(), "repetition_penalty": request.repeat_penalty}


def error_text(response: httpx.Response) -> str:
    """The server's error message on one line, whatever shape its body has."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body = body.get("error", body)  # OpenAI and vLLM nest the message; FastAPI uses "detail"
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body
    text = " ".join(str(body).split()) or response.reason_phrase
    return text[:MAX_ERROR_CHARS]


def schema_format(schema: JsonSchema, style: str) -> dict[str, Any]:
    """The ``response_format`` that asks the server to decode to ``schema``.

    ``json_schema`` is OpenAI's shape; vLLM, LM Studio and llama.cpp's
    ``llama-server`` honour it. llama-cpp-python's server (0.3.x) types
    ``response_format.type`` as ``"text" | "json_object"``, rejects
    ``json_schema`` (HTTP 500, pydantic literal_error) and reads the schema from
    ``{"type": "json_object", "schema": ...}``. vLLM accepts that shape too but
    then only forces *some* JSON object, so no single shape serves both.
    """
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def rejects_json_schema(response: httpx.Response) -> bool:
    """Whether the server refused the ``json_schema`` type and offers ``json_object`` instead.

    Both words must appear, so that a server which rejects a bad *schema* is
    not retried with a shape that would silently drop the constraint.
    """
    text = response.text
    return response.status_code in (400, 422, 500) and "json_schema" in text and "json_object" in text


def model_entries(listing: Any) -> dict[str, dict[str, Any]]:
    """The entries of a ``GET /models`` answer, by model id."""
    data = listing.get("data") if isinstance(listing, dict) else None
    return {str(e.get("id")): e for e in data or [] if isinstance(e, dict)}


def server_digest(entry: dict[str, Any], base_url: str) -> str:
    """``server:<sha256>`` of the stable part of a ``/models`` entry and the URL.

    A server identity, not a weights digest: OpenAI-compatible servers do not
    report what file they loaded, so swapping the weights behind the same alias
    and URL leaves this unchanged.
    """
    stable = {k: v for k, v in entry.items() if k not in VOLATILE_MODEL_KEYS}
    blob = json.dumps([stable, base_url], sort_keys=True).encode()
    return "server:" + hashlib.sha256(blob).hexdigest()


class OpenAIBackend:
    """A model served over OpenAI's API by vLLM, llama.cpp's server or LM Studio."""

    thread_safe = True  # one httpx.Client, safe across threads; the server batches concurrent requests

    def __init__(self, model: str, *, base_url: str, timeout: float, api_key: str | None = None) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Cloud keys (OPENAI_API_KEY) are never read: a local run must not send them anywhere.
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # trust_env=False: an HTTP(S)_PROXY setting must not route prompts off the machine.
        self._http = httpx.Client(timeout=timeout, headers=headers, trust_env=False)
        # The response_format shape this server takes, learnt from the first request with a schema
        # (None until then); _probe makes concurrent first requests wait for that answer.
        self._schema_style: str | None = None
        self._probe = threading.Lock()
        self._info: ModelInfo | None = None

    def _send(self, method: str, path: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        """One HTTP exchange, transport failures turned into BackendErrors."""
        url = self.base_url + path
        try:
            return self._http.request(method, url, json=payload)
        except httpx.TimeoutException:
            raise BackendError(
                f"timeout: {url} did not answer within {self.timeout:g} s; {TIMEOUT_HINT}"
            ) from None
        except httpx.TransportError as exc:
            raise self._unreachable(url, exc) from None
        except httpx.HTTPError as exc:
            raise BackendError(f"--dspy-base-url: request to {url} failed ({exc})") from None

    def _unreachable(self, url: str, exc: httpx.TransportError) -> BackendError:
        """Why a request got no answer: server not started, gone since the start of the run, or other."""
        reason = connect_reason(exc)
        if self._info is not None:  # it answered GET /models when the run started
            return BackendError(
                f"openai server at {self.base_url} stopped answering mid-run ({reason}); "
                "it may have crashed or been stopped: check its log, restart it and run again"
            )
        if isinstance(exc, httpx.ConnectError):
            return BackendError(
                f"--dspy-base-url: cannot reach {self.base_url} ({reason}); start the server or fix the URL"
            )
        return BackendError(f"--dspy-base-url: request to {url} failed ({reason})")

    def _checked(self, response: httpx.Response) -> Any:
        """The JSON body of a successful response; a BackendError otherwise."""
        url = str(response.request.url)
        if response.status_code == 404:
            # A web page's 404 is HTML: its status line says as much, without the markup.
            html = response.headers.get("content-type", "").startswith("text/html")
            why = response.reason_phrase if html else error_text(response)[:80]
            raise BackendError(f"--dspy-base-url: {url} answered 404 ({why}); {self._not_found_fix()}")
        where = f"openai server at {self.base_url}: HTTP {response.status_code}"
        if response.is_error:
            refusal = context_refusal(where, response.text, CONTEXT_FIX)
            raise refusal or BackendError(f"{where}: {error_text(response)}; see the server's log")
        try:
            return response.json()
        except ValueError:
            body = " ".join(response.text.split())[:60]
            raise BackendError(
                f"--dspy-base-url: {url} did not answer JSON (it sent {body!r}); "
                "is it an OpenAI-compatible server? see its log"
            ) from None

    def _not_found_fix(self) -> str:
        """What a 404 means: a URL without its /v1, or no OpenAI-compatible API at that address at all."""
        if self.base_url.endswith("/v1"):
            return ("no OpenAI-compatible API answers there (a web server or another service?); "
                    "point it at the model server, e.g. http://127.0.0.1:8000/v1")
        return "the base URL must end in /v1, e.g. http://127.0.0.1:8000/v1"

    def info(self) -> ModelInfo:
        """Check the model is served (one ``GET /models``) and name the server identity."""
        if self._info is None:
            listing = self._checked(self._send("GET", "/models"))
            entries = model_entries(listing)
            if self.model not in entries:
                served = ", ".join(entries) or "nothing"
                raise BackendError(
                    f"--dspy-model: server at {self.base_url} does not serve {self.model!r}; "
                    f"it serves: {served}"
                )
            digest = server_digest(entries[self.model], self.base_url)
            self._info = ModelInfo("openai", self.model, digest, self.base_url)
        return self._info

    def _payload(self, request: ChatRequest, style: str | None) -> dict[str, Any]:
        """The chat-completions body; ``max_tokens`` because llama_cpp.server ignores the newer name."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(request.messages),
            "max_tokens": request.max_tokens,
            **sampling(request),
            "stream": False,
        }
        if request.schema is not None:
            payload["response_format"] = schema_format(request.schema, style or "json_schema")
        return payload

    def _post_chat(self, request: ChatRequest) -> Any:
        """POST the chat; the first one with a schema learns which ``response_format`` shape the server takes."""
        if request.schema is None or self._schema_style is not None:
            return self._checked(self._send("POST", "/chat/completions", self._payload(request, self._schema_style)))
        with self._probe:  # one probe per backend: the other threads wait for its answer
            if self._schema_style is None:
                return self._checked(self._probe_schema_style(request))
        return self._checked(self._send("POST", "/chat/completions", self._payload(request, self._schema_style)))

    def _probe_schema_style(self, request: ChatRequest) -> httpx.Response:
        """Send OpenAI's ``json_schema``; refused naming ``json_object`` (llama_cpp.server), resend in that shape."""
        response = self._send("POST", "/chat/completions", self._payload(request, "json_schema"))
        if rejects_json_schema(response):
            self._schema_style = "json_object"
            return self._send("POST", "/chat/completions", self._payload(request, "json_object"))
        if response.is_success:
            self._schema_style = "json_schema"
        return response  # an error says nothing of the shape: the next request probes again

    def chat(self, request: ChatRequest) -> ChatResult:
        """Answer one chat request, schema-constrained when the request has a schema."""
        body = self._post_chat(request)
        try:
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(
                f"openai server at {self.base_url}: answer has no choices[0].message; "
                "is it an OpenAI-compatible server? see its log"
            ) from None
        usage = body.get("usage") or {}
        return ChatResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()
