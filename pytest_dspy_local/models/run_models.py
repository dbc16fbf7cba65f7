"""The run's models: the task model, the optional proposal model and target models, created on first use.

Each is a Backend (chosen through the ``pytest_dspy_local_make_backend`` hook) wrapped in a
``BackendEngine`` (answer cache, call counting) and a ``dspy.LM``. A failure to create one
is remembered, so every prompt item reports the same one-line cause without retrying.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_dspy_local.core.results import ModelIdentity, Traffic
from pytest_dspy_local.core.settings import Settings
from pytest_dspy_local.errors import BackendError, PromptError, UsageError
from pytest_dspy_local.models.backends.base import Backend, ModelInfo

if TYPE_CHECKING:
    import dspy

    from pytest_dspy_local.models.engine import BackendEngine

# (backend name, settings) -> a Backend, or None when nobody provides that name. Under pytest
# this is the pytest_dspy_local_make_backend hook; outside it, the built-in backends.
BackendFactory = Callable[[str, Settings], "Backend | None"]


def import_dspy(cache_dir: Path | None) -> None:
    """Import DSPy with the plugin's environment: known leaks closed, a project-local cache."""
    from pytest_dspy_local.privacy.egress import close_known_leaks

    # Read when litellm / dspy are first imported, so they must be set before. DSPy's own
    # cache is not used by the plugin's LM; pointing it here keeps it out of $HOME too.
    close_known_leaks()
    if cache_dir is not None:
        os.environ.setdefault("DSPY_CACHEDIR", str(cache_dir / "dspy"))
    import dspy  # noqa: F401


class Models:
    """The task model (and proposal model) of one run."""

    def __init__(self, settings: Settings, cache_dir: Path | None, make_backend: BackendFactory) -> None:
        self.settings = settings
        self.cache_dir = cache_dir  # None: no answer cache (--dspy-no-cache)
        self._make_backend = make_backend
        self._engine: BackendEngine | None = None
        self._lm: dspy.LM | None = None
        self._info: ModelInfo | None = None
        self._error: str | None = None
        self._prompt_engine: BackendEngine | None = None
        self._prompt_lm: dspy.LM | None = None
        self._targets: dict[str, tuple[BackendEngine, dspy.LM, ModelInfo]] = {}

    def backend_name(self) -> str:
        """The resolved backend name (never ``auto``)."""
        from pytest_dspy_local.models.backends.builtin import resolve_backend_name

        return resolve_backend_name(self.settings)

    def _make_engine(self, settings: Settings) -> BackendEngine:
        from pytest_dspy_local.models.backends.builtin import resolve_backend_name
        from pytest_dspy_local.models.cache import ResponseCache
        from pytest_dspy_local.models.engine import BackendEngine

        name = resolve_backend_name(settings)
        backend = self._make_backend(name, settings)
        if backend is None:
            from pytest_dspy_local.core.settings import BACKENDS, did_you_mean

            raise UsageError(
                f"--dspy-backend: unknown backend {name!r};{did_you_mean(name, BACKENDS)} choose auto, embedded, "
                "ollama, openai, or one that a conftest.py provides through pytest_dspy_local_make_backend"
            )
        cache = None if self.cache_dir is None else ResponseCache(self.cache_dir)
        s = settings
        return BackendEngine(backend, max_tokens=s.max_tokens, temperature=s.temperature, seed=s.seed, cache=cache)

    def check_cache(self) -> None:
        """Open and close the answer cache: ``UsageError`` naming the file and the fix when it cannot be used."""
        from pytest_dspy_local.models.cache import ResponseCache

        if self.cache_dir is not None:
            ResponseCache(self.cache_dir).close()

    def engine(self) -> BackendEngine:
        """The task model's engine, created on first use; a failure is remembered."""
        if self._error is not None:
            raise PromptError(self._error)
        if self._engine is None:
            try:
                self._engine = self._make_engine(self.settings)
            except (BackendError, UsageError) as exc:
                self._error = str(exc)
                raise PromptError(self._error) from None
        return self._engine

    def identity(self) -> ModelIdentity:
        """The task model as results record it."""
        return self.info().identity()

    def prompt_identity(self) -> ModelIdentity | None:
        """The proposal model as results record it, when one other than the task model is in use."""
        info = self.prompt_info()
        return None if info is None else info.identity()

    def info(self) -> ModelInfo:
        """The task model's name, digest and endpoint (asks a server once)."""
        if self._info is None:
            try:
                self._info = self.engine().backend.info()
            except BackendError as exc:
                self._error = str(exc)
                raise PromptError(self._error) from None
        return self._info

    def prompt_info(self) -> ModelInfo | None:
        """The proposal model's info, when one other than the task model is in use."""
        return self._prompt_engine.backend.info() if self._prompt_engine is not None else None

    def lm(self) -> dspy.LM:
        """The ``dspy.LM`` for the task model."""
        if self._lm is None:
            import_dspy(self.cache_dir)
            from pytest_dspy_local.models.engine import make_lm

            self._lm = make_lm(self.engine(), self.info())
        return self._lm

    def concurrency(self, settings: Settings, target: str | None = None) -> int:
        """Requests in flight for the task model (or a target): the setting, or the backend's default.

        1 when the backend is not thread-safe.
        """
        from pytest_dspy_local.models.backends.base import SERVER_CONCURRENCY, is_thread_safe

        engine = self.engine() if target is None else self._target(target)[0]
        if not is_thread_safe(engine.backend):
            return 1
        return settings.concurrency if settings.concurrency is not None else SERVER_CONCURRENCY

    def lm_with(self, settings: Settings, target: str | None = None) -> dspy.LM:
        """The task model (or a target) with a prompt's own max_tokens, temperature and seed."""
        lm = self.lm() if target is None else self._target(target)[1]
        return lm.copy(max_tokens=settings.max_tokens, temperature=settings.temperature, seed=settings.seed)

    def _target(self, name: str) -> tuple[BackendEngine, dspy.LM, ModelInfo]:
        """Target model ``name`` ([tool.dspy_local.targets.<name>]), created on first use."""
        if name not in self._targets:
            import_dspy(self.cache_dir)
            from pytest_dspy_local.models.engine import make_lm

            try:
                engine = self._make_engine(self.settings.for_target(name))
                info = engine.backend.info()
                self._targets[name] = engine, make_lm(engine, info), info
            except (BackendError, UsageError) as exc:
                raise PromptError(f"target {name!r} ([tool.dspy_local.targets.{name}]): {exc}") from None
        return self._targets[name]

    def target_identity(self, name: str) -> ModelIdentity:
        """Target model ``name`` as results record it."""
        return self._target(name)[2].identity()

    def prompt_lm(self) -> dspy.LM:
        """The proposal model for optimizers: ``prompt_model`` if set, else the task model."""
        other = self.settings.for_prompt_model()
        if other is None:
            return self.lm()
        if self._prompt_lm is None:
            from pytest_dspy_local.models.engine import make_lm

            try:
                self._prompt_engine = self._make_engine(other)
                self._prompt_lm = make_lm(self._prompt_engine, self._prompt_engine.backend.info())
            except (BackendError, UsageError) as exc:
                raise PromptError(f"prompt model: {exc}") from None
        return self._prompt_lm

    def _engines(self) -> list[BackendEngine]:
        engines = [e for e in (self._engine, self._prompt_engine) if e is not None]
        return engines + [engine for engine, _, _ in self._targets.values()]

    def counters(self) -> Traffic:
        """Model traffic so far over every model."""
        total = Traffic()
        for engine in self._engines():
            total = total + engine.counter
        return total

    def calls_by_endpoint(self) -> dict[str, int]:
        """Model calls so far per endpoint (``in-process`` or a server URL)."""
        calls: dict[str, int] = {}
        for engine in self._engines():
            if engine.endpoint:
                calls[engine.endpoint] = calls.get(engine.endpoint, 0) + engine.counter.calls
        return calls

    def close(self) -> None:
        """Free the models and their caches."""
        for engine in self._engines():
            engine.close()
        self._engine = self._prompt_engine = None
        self._targets.clear()
