"""Run state: the configured model, created on first use, and the results so far.

One ``RunState`` per pytest run, registered as a plugin and reached through
``STATE_KEY``; nothing about a run lives in module globals.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dspy_local.backends.base import BackendError, ModelInfo
from pytest_dspy_local.backends.builtin import resolve_backend_name
from pytest_dspy_local.config import ConfigError, Settings, for_prompt
from pytest_dspy_local.exceptions import PromptError

if TYPE_CHECKING:
    import dspy

    from pytest_dspy_local.data import Row
    from pytest_dspy_local.engine import BackendEngine
    from pytest_dspy_local.evaluation import EvalResult
    from pytest_dspy_local.spec import PromptSpec


def import_dspy(cache_dir: Path) -> None:
    """Import DSPy with the plugin's environment: no price-map fetch, a project-local cache."""
    # Read when litellm / dspy are first imported, so they must be set before. DSPy's own
    # cache is not used by the plugin's LM; pointing it here keeps it out of $HOME too.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("DSPY_CACHEDIR", str(cache_dir / "dspy"))
    import dspy  # noqa: F401


class RunState:
    """The model and results of one pytest run."""

    def __init__(self, config: pytest.Config, settings: Settings, pinned: frozenset[str]) -> None:
        self.config = config
        self.settings = settings
        self.pinned = pinned
        self.skipped: list[tuple[Path, str]] = []
        self.results: list[EvalResult] = []
        self._engine: BackendEngine | None = None
        self._lm: dspy.LM | None = None
        self._info: ModelInfo | None = None
        self._error: str | None = None

    @property
    def cache_dir(self) -> Path:
        """Where DSPy's disk cache lives for this project."""
        return self.config.rootpath / ".dspy_cache"

    def backend_name(self) -> str:
        """The resolved backend name (never ``auto``)."""
        return resolve_backend_name(self.settings)

    def engine(self) -> BackendEngine:
        """The backend wrapped for DSPy, created on first use; a failure is remembered."""
        if self._error is not None:
            raise PromptError(self._error)
        if self._engine is None:
            try:
                self._engine = self._make_engine()
            except (BackendError, ConfigError) as exc:
                self._error = str(exc)
                raise PromptError(self._error) from None
        return self._engine

    def _make_engine(self) -> BackendEngine:
        from pytest_dspy_local.engine import BackendEngine

        name = self.backend_name()
        backend = self.config.hook.pytest_dspy_local_make_backend(name=name, settings=self.settings)
        if backend is None:
            raise ConfigError(
                f"--dspy-backend: unknown backend {name!r}; choose auto, embedded, ollama, openai, "
                "or one that a conftest.py provides through pytest_dspy_local_make_backend"
            )
        from pytest_dspy_local.cache import ResponseCache

        s = self.settings
        cache = ResponseCache(self.cache_dir)
        return BackendEngine(backend, max_tokens=s.max_tokens, temperature=s.temperature, seed=s.seed, cache=cache)

    def model_info(self) -> ModelInfo:
        """The model's name, digest and endpoint (asks a server once)."""
        if self._info is None:
            try:
                self._info = self.engine().backend.info()
            except BackendError as exc:
                self._error = str(exc)
                raise PromptError(self._error) from None
        return self._info

    def lm(self) -> dspy.LM:
        """The ``dspy.LM`` for the configured model."""
        if self._lm is None:
            import_dspy(self.cache_dir)
            from pytest_dspy_local.engine import make_lm

            self._lm = make_lm(self.engine(), self.model_info())
        return self._lm

    def threshold(self, spec: PromptSpec) -> float:
        """Per-prompt table, then the module's ``threshold``, then the configured default."""
        table = self.settings.prompts.get(spec.name, {})
        if "threshold" in table:
            return float(table["threshold"])
        return spec.threshold if spec.threshold is not None else self.settings.threshold

    def evaluate(self, spec: PromptSpec, rows: list[Row]) -> EvalResult:
        """Evaluate one prompt module on its rows with the configured model."""
        import dspy

        from pytest_dspy_local.evaluation import evaluate_rows

        settings = for_prompt(self.settings, self.pinned, spec.name)
        rows = rows[: settings.max_examples] if settings.max_examples else rows
        lm, engine = self.lm(), self.engine()
        calls_before, cached_before = engine.counter.calls, engine.counter.cached
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            result = evaluate_rows(spec.program, rows, spec.metric, spec.inputs, name=spec.name, origin=str(spec.path))
        result.threshold = self.threshold(spec)
        result.calls = engine.counter.calls - calls_before
        result.cached = engine.counter.cached - cached_before
        result.model = {k: str(v) for k, v in asdict(self.model_info()).items() if k != "details"}
        self.results.append(result)
        return result

    def call_totals(self) -> tuple[int, int]:
        """Model calls made and answered from the cache, over all prompts so far."""
        return sum(r.calls for r in self.results), sum(r.cached for r in self.results)

    def close(self) -> None:
        """Free the model."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def describe(self) -> dict[str, Any]:
        """Backend and model as settings say, without touching the model."""
        return {"backend": self.settings.backend, "model": self.settings.model, "base_url": self.settings.base_url}


STATE_KEY = pytest.StashKey[RunState]()
