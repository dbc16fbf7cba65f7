"""A loopback server for the part of Ollama's REST API that the ``ollama`` client uses.

No Ollama server installs on these machines (only its client does), so this
stands in for the server process; the answers come from a REAL model, the
SmolLM2 GGUF run by the plugin's own embedded backend (llama.cpp's engine from
the ``xllamacpp`` wheel), so what the backend gets back is model output.
Routes: ``POST /api/chat`` (streamed as NDJSON unless ``"stream": false``, as
Ollama does), ``GET /api/tags``, ``POST /api/show``, ``GET /api/version``.
Errors have Ollama's shape: ``{"error": "..."}`` with an HTTP status. One
difference: a prompt longer than the context is refused (HTTP 500, the embedded
backend's message) where Ollama would truncate it.

    python -m tests.servers.ollama_stub --port 11434 --model-name smollm2:135m
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pytest_dspy_local.models.backends import gguf
from pytest_dspy_local.models.backends.base import BackendError, ChatRequest, ChatResult
from pytest_dspy_local.models.backends.embedded import (
    EmbeddedBackend,
    chat_result,
    default_model_path,
    file_digest,
    request_body,
)

from .jsonhttp import JsonHandler

DEFAULT_NAME = "smollm2:135m"
# GGUF general.file_type -> the quantization names Ollama reports.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 15: "Q4_K_M", 17: "Q5_K_M", 18: "Q6_K"}
N_CTX = 4096
# Ollama's option names for the sampling settings a ChatRequest carries under the same names.
SAMPLING_OPTIONS = ("top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty")


class StubBackend(EmbeddedBackend):
    """The embedded backend, also giving the answer's tokens: Ollama streams one object per token."""

    def chat_tokens(self, request: ChatRequest) -> tuple[ChatResult, list[str]]:
        """The answer and its text token by token (llama.cpp's ``logprobs`` lists the sampled tokens)."""
        out = self.complete({**request_body(request), "logprobs": True})
        logprobs = out["choices"][0].get("logprobs") or {}
        return chat_result(out), [str(t["token"]) for t in logprobs.get("content") or []]


def gguf_value(value: Any) -> str:
    """A metadata value as llama.cpp prints it (what Ollama's ``model_info`` was read from)."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:f}" if isinstance(value, float) else str(value)


@dataclass
class StubModel:
    """The one model the stub serves, and what ``/api/tags`` says about it."""

    name: str
    path: Path
    backend: StubBackend
    digest: str
    modified_at: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, path: Path) -> StubModel:
        """Load the GGUF, hash it (the digest the stub lists) and read its metadata."""
        backend = StubBackend(f"gguf:{path}", n_ctx=N_CTX)
        digest = file_digest(path).removeprefix("sha256:")  # /api/tags lists bare hex
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat()
        with path.open("rb") as handle:
            meta = {key: gguf_value(value) for key, value in gguf.metadata(handle).items()}
        return cls(name, path, backend, digest, mtime, meta)

    def details(self) -> dict[str, Any]:
        """Ollama's ``details`` object, read from the GGUF metadata."""
        meta = self.metadata
        family = meta.get("general.architecture", "llama")
        file_type = int(meta.get("general.file_type", -1))
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": meta.get("general.size_label", ""),
            "quantization_level": FILE_TYPES.get(file_type, f"file_type {file_type}"),
        }

    def tag(self) -> dict[str, Any]:
        """This model's entry in ``/api/tags``."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.path.stat().st_size,
            "digest": self.digest,
            "details": self.details(),
        }


def chat_request(body: dict[str, Any]) -> ChatRequest:
    """The backend request for an Ollama chat body (``messages``, ``format``, ``options``)."""
    options = body.get("options") or {}
    num_predict = int(options.get("num_predict", -1))
    fmt = body.get("format")
    # "json" asks for any JSON object; a schema constrains the answer as the embedded backend does.
    schema = {"type": "object"} if fmt == "json" else fmt if isinstance(fmt, dict) else None
    sampling = {name: options[name] for name in SAMPLING_OPTIONS if name in options}
    return ChatRequest(
        messages=tuple(body.get("messages") or ()),
        schema=schema,
        max_tokens=num_predict if num_predict > 0 else -1,  # -1: no limit, for Ollama and llama.cpp alike
        temperature=float(options.get("temperature", 0.8)),  # Ollama's default
        seed=int(options.get("seed", 0)),
        **sampling,
    )


def now() -> str:
    """An RFC 3339 timestamp, as Ollama's ``created_at``."""
    return datetime.now(timezone.utc).isoformat()


def done_chunk(name: str, reason: str, prompt_tokens: int, tokens: int, started: float) -> dict[str, Any]:
    """The closing object of a chat answer, with Ollama's counters."""
    elapsed = int((time.perf_counter() - started) * 1e9)
    return {
        "model": name,
        "created_at": now(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reason,
        "total_duration": elapsed,
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 0,
        "eval_count": tokens,
        "eval_duration": elapsed,
    }


class OllamaStub(ThreadingHTTPServer):
    """Serves one model on 127.0.0.1."""

    daemon_threads = True
    block_on_close = False  # keep-alive connections must not hold up shutdown

    def __init__(self, model: StubModel, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.model = model


class Handler(JsonHandler):
    """Routes requests; the backend lets one chat generate at a time (llama.cpp is not thread-safe)."""

    content_type = "application/json; charset=utf-8"
    server: OllamaStub

    def do_GET(self) -> None:
        """``/api/tags`` and ``/api/version``."""
        if self.path == "/api/tags":
            self.send_json(200, {"models": [self.server.model.tag()]})
        elif self.path == "/api/version":
            self.send_json(200, {"version": "0.0.0-stub"})
        else:
            self.send_json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        """``/api/chat`` and ``/api/show``."""
        body = self.read_json()
        if body is None:
            return
        model = self.server.model
        name = body.get("model") or body.get("name")  # older clients send "name"
        if self.path not in ("/api/chat", "/api/show"):
            self.send_json(404, {"error": f"no route {self.path}"})
        elif name != model.name:
            self.send_json(404, {"error": f"model '{name}' not found"})
        elif self.path == "/api/show":
            self.send_json(200, self.show(model))
        elif body.get("stream", True):
            self.stream_chat(model, body)
        else:
            self.answer_chat(model, body)

    def show(self, model: StubModel) -> dict[str, Any]:
        """``/api/show``: template, details and the GGUF's general metadata."""
        meta = model.metadata
        return {
            "modelfile": f"FROM {model.path}\n",
            "parameters": "",
            "template": meta.get("tokenizer.chat_template", ""),
            "details": model.details(),
            "model_info": {k: v for k, v in meta.items() if not k.startswith("tokenizer.")},
            "capabilities": ["completion"],
            "modified_at": model.modified_at,
        }

    def answer_chat(self, model: StubModel, body: dict[str, Any]) -> None:
        """A non-streamed chat answer, or the backend's refusal in Ollama's error shape."""
        try:
            reply = self.chat(model, body)
        except BackendError as exc:  # e.g. a prompt longer than the context window
            self.send_json(500, {"error": str(exc)})
        else:
            self.send_json(200, reply)

    def chat(self, model: StubModel, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed chat answer."""
        started = time.perf_counter()
        result = model.backend.chat(chat_request(body))
        reply = done_chunk(model.name, result.finish_reason, result.prompt_tokens, result.completion_tokens, started)
        reply["message"]["content"] = result.text
        return reply

    def stream_chat(self, model: StubModel, body: dict[str, Any]) -> None:
        """A streamed chat answer: NDJSON objects in HTTP chunks, as Ollama sends them."""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for obj in self.stream_objects(model, body):
                line = json.dumps(obj).encode() + b"\n"
                self.wfile.write(b"%X\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-answer

    def stream_objects(self, model: StubModel, body: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """Ollama's streamed chat objects: one per token, then the closing counters.

        The answer is generated whole, then sent token by token: xllamacpp's own streaming did not
        return within 120 s for a prompt longer than the context window (seen here with its Server).
        """
        started = time.perf_counter()
        try:
            result, tokens = model.backend.chat_tokens(chat_request(body))
        except BackendError as exc:  # the status line is sent: Ollama reports it in the stream
            yield {"error": str(exc)}
            return
        pieces = [text for text in tokens if text]
        for text in pieces:
            message = {"role": "assistant", "content": text}
            yield {"model": model.name, "created_at": now(), "message": message, "done": False}
        yield done_chunk(model.name, result.finish_reason, result.prompt_tokens, len(pieces), started)


@contextmanager
def serve(model_name: str = DEFAULT_NAME, path: Path | None = None, port: int = 0) -> Iterator[str]:
    """Run the stub in a thread for the ``with`` block; yields its base URL."""
    stub = OllamaStub(StubModel.load(model_name, path or default_model_path()), port)
    thread = threading.Thread(target=stub.serve_forever, name="ollama-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{stub.server_port}"
    finally:
        stub.shutdown()
        stub.server_close()
        stub.model.backend.close()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model-name", default=DEFAULT_NAME)
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2-135M)")
    args = parser.parse_args(argv)
    stub = OllamaStub(StubModel.load(args.model_name, args.model or default_model_path()), args.port)
    print(f"ollama stub serving {args.model_name} on http://127.0.0.1:{stub.server_port}", flush=True)
    try:
        stub.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stub.server_close()
        stub.model.backend.close()


if __name__ == "__main__":
    main()
