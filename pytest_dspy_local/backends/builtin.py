"""The three built-in backends, as implementations of ``pytest_dspy_local_make_backend``.

Each backend module is imported only when it is chosen, so llama.cpp, httpx
and the ollama client cost nothing unless used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pytest_dspy_local.config import DEFAULT_MODEL, ConfigError

if TYPE_CHECKING:
    from pytest_dspy_local.backends.base import Backend
    from pytest_dspy_local.config import Settings


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
    raise ConfigError(
        f"--dspy-backend=auto cannot tell which backend serves model {settings.model!r}; "
        "set --dspy-backend=ollama, or --dspy-backend=openai with --dspy-base-url, or --dspy-model=gguf:PATH"
    )


def make_builtin_backend(settings: Settings) -> Backend:
    """One of the built-in backends, chosen by settings (outside pytest: no hooks)."""
    name = resolve_backend_name(settings)
    backend = pytest_dspy_local_make_backend(name, settings)
    if backend is None:
        raise ConfigError(f"backend {name!r} is not built in; choose embedded, ollama or openai")
    return backend


@pytest.hookimpl(trylast=True)
def pytest_dspy_local_make_backend(name: str, settings: Settings) -> Backend | None:
    """Provide the embedded, ollama and openai backends."""
    if name == "embedded":
        from pytest_dspy_local.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(settings.model, n_ctx=settings.n_ctx, seed=settings.seed)
    if name == "ollama":
        from pytest_dspy_local.backends.ollama import OllamaBackend

        return OllamaBackend(settings.model, base_url=settings.base_url, timeout=settings.timeout)
    if name == "openai":
        from pytest_dspy_local.backends.openai import OpenAIBackend

        if not settings.base_url:
            raise ConfigError("--dspy-backend=openai needs --dspy-base-url, e.g. http://127.0.0.1:8000/v1")
        return OpenAIBackend(settings.model, base_url=settings.base_url, timeout=settings.timeout)
    return None
