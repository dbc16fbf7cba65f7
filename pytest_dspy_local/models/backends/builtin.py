"""The three built-in backends, chosen by name (the plugin offers them through
``pytest_dspy_local_make_backend``, see plugin/backends.py).

Each backend module is imported only when it is chosen, so llama.cpp, httpx
and the ollama client cost nothing unless used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pytest_dspy_local.core.defaults import DEFAULT_MODEL
from pytest_dspy_local.errors import UsageError

if TYPE_CHECKING:
    from pytest_dspy_local.core.settings import Settings
    from pytest_dspy_local.models.backends.base import Backend


def resolve_backend_name(settings: Settings) -> str:
    """Turn ``--dspy-backend=auto`` into a backend name."""
    if settings.backend != "auto":
        return settings.backend
    if settings.model == DEFAULT_MODEL or settings.model.startswith("gguf:"):
        return "embedded"
    if settings.base_url:
        return "openai"
    if os.environ.get("OLLAMA_HOST"):
        return "ollama"
    raise UsageError(
        f"--dspy-backend=auto cannot tell which backend serves model {settings.model!r}; "
        "set --dspy-backend=ollama, or --dspy-backend=openai with --dspy-base-url, or --dspy-model=gguf:PATH"
    )


def check_base_url(settings: Settings, flag: str = "--dspy-base-url") -> None:
    """An openai backend's URL needs its scheme (httpx refuses one without); Ollama's may omit it."""
    url, backend = settings.base_url, resolve_backend_name(settings)
    if url and backend == "openai" and not url.lower().startswith(("http://", "https://")):
        raise UsageError(f"{flag}: {url!r} has no http:// or https://; write http://{url.lstrip('/')}")


def make_builtin_backend(settings: Settings) -> Backend:
    """One of the built-in backends, chosen by settings (outside pytest: no hooks)."""
    name = resolve_backend_name(settings)
    backend = builtin_backend(name, settings)
    if backend is None:
        raise UsageError(f"backend {name!r} is not built in; choose embedded, ollama or openai")
    return backend


def builtin_backend(name: str, settings: Settings) -> Backend | None:
    """Provide the embedded, ollama and openai backends."""
    if name == "embedded":
        from pytest_dspy_local.models.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(settings.model, n_ctx=settings.n_ctx, seed=settings.seed)
    if name == "ollama":
        from pytest_dspy_local.models.backends.ollama import OllamaBackend

        return OllamaBackend(settings.model, base_url=settings.base_url, timeout=settings.timeout)
    if name == "openai":
        from pytest_dspy_local.models.backends.openai import OpenAIBackend

        if not settings.base_url:
            raise UsageError("--dspy-backend=openai needs --dspy-base-url, e.g. http://127.0.0.1:8000/v1")
        return OpenAIBackend(settings.model, base_url=settings.base_url, timeout=settings.timeout)
    return None
