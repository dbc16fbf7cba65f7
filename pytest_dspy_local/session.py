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

    from pytest_dspy_local.data import Dataset, Row
    from pytest_dspy_local.engine import BackendEngine
    from pytest_dspy_local.evaluation import EvalResult
    from pytest_dspy_local.optimization import Outcome
    from pytest_dspy_local.snapshot import SnapshotPaths
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
        self._prompt_lm: dspy.LM | None = None
        self._prompt_engine: BackendEngine | None = None
        self.optimize_mode: str | None = config.getoption("dspy_optimize", None)
        self.update_baseline: bool = bool(config.getoption("dspy_update_baseline", False))
        self.pending: dict[Path, bytes] = {}
        self.written: list[Path] = []
        self.snapshot_files: set[Path] = set()
        self.collected_modules: set[Path] = set()

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

    def _make_engine(self, settings: Settings | None = None) -> BackendEngine:
        from pytest_dspy_local.engine import BackendEngine

        settings = settings or self.settings
        name = resolve_backend_name(settings)
        backend = self.config.hook.pytest_dspy_local_make_backend(name=name, settings=settings)
        if backend is None:
            raise ConfigError(
                f"--dspy-backend: unknown backend {name!r}; choose auto, embedded, ollama, openai, "
                "or one that a conftest.py provides through pytest_dspy_local_make_backend"
            )
        from pytest_dspy_local.cache import ResponseCache

        s = settings
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

    def settings_for(self, name: str) -> Settings:
        """The settings with the prompt's own table applied."""
        return for_prompt(self.settings, self.pinned, name)

    def prompt_lm(self) -> dspy.LM:
        """The proposal model for optimizers: ``prompt_model`` if set, else the task model."""
        other = self.settings.for_prompt_model()
        if other is None:
            return self.lm()
        if self._prompt_lm is None:
            from pytest_dspy_local.engine import make_lm

            try:
                self._prompt_engine = self._make_engine(other)
                self._prompt_lm = make_lm(self._prompt_engine, self._prompt_engine.backend.info())
            except (BackendError, ConfigError) as exc:
                raise PromptError(f"prompt model: {exc}") from None
        return self._prompt_lm

    def calls_text(self) -> str:
        """``N model calls, M cached`` so far, over both models."""
        engines = [e for e in (self._engine, self._prompt_engine) if e is not None]
        calls = sum(e.counter.calls for e in engines)
        return f"{calls} model calls, {sum(e.counter.cached for e in engines)} cached"

    def run_eval(self, spec: PromptSpec, program: Any, rows: list[Row]) -> EvalResult:
        """Evaluate ``program`` on ``rows`` with the task model, counting calls."""
        import dspy

        from pytest_dspy_local.evaluation import evaluate_rows

        lm, engine = self.lm(), self.engine()
        calls_before, cached_before = engine.counter.calls, engine.counter.cached
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            result = evaluate_rows(program, rows, spec.metric, spec.inputs, name=spec.name, origin=str(spec.path))
        result.calls = engine.counter.calls - calls_before
        result.cached = engine.counter.cached - cached_before
        result.model = {k: str(v) for k, v in asdict(self.model_info()).items() if k != "details"}
        return result

    def evaluate(self, spec: PromptSpec, rows: list[Row]) -> EvalResult:
        """Evaluate one prompt module on its rows (the first ``max_examples``) and record the result."""
        settings = self.settings_for(spec.name)
        rows = rows[: settings.max_examples] if settings.max_examples else rows
        result = self.run_eval(spec, spec.program, rows)
        result.threshold = self.threshold(spec)
        self.results.append(result)
        return result

    def queue_snapshot(
        self, spec: PromptSpec, dataset: Dataset, paths: SnapshotPaths, result: EvalResult, outcome: Outcome | None
    ) -> None:
        """Queue the snapshot files; they are written once, at session end."""
        from pytest_dspy_local.snapshot import snapshot_files

        prompt_info = self._prompt_engine.backend.info() if self._prompt_engine is not None else None
        files = snapshot_files(spec, dataset, paths, result, outcome, self.model_info(), prompt_info)
        self.pending.update(files)

    def flush_snapshots(self) -> None:
        """Write every queued snapshot file atomically (called once, at session end)."""
        from pytest_dspy_local.snapshot import write_atomically

        changed = {p: c for p, c in self.pending.items() if not p.is_file() or p.read_bytes() != c}
        write_atomically(changed)
        self.written = sorted(changed)
        self.pending.clear()

    def unused_snapshots(self) -> list[Path]:
        """Snapshot files whose prompt module no longer exists."""
        from pytest_dspy_local.snapshot import module_of

        return sorted(p for p in self.snapshot_files if (m := module_of(p)) is not None and not m.is_file())

    def call_totals(self) -> tuple[int, int]:
        """Model calls made and answered from the cache, over all prompts so far."""
        return sum(r.calls for r in self.results), sum(r.cached for r in self.results)

    def close(self) -> None:
        """Free the models."""
        for engine in (self._engine, self._prompt_engine):
            if engine is not None:
                engine.close()
        self._engine = self._prompt_engine = None

    def describe(self) -> dict[str, Any]:
        """Backend and model as settings say, without touching the model."""
        return {"backend": self.settings.backend, "model": self.settings.model, "base_url": self.settings.base_url}


STATE_KEY = pytest.StashKey[RunState]()
