"""Settings: what a project configures (``Settings``) and what one run asks for (``RunFlags``).

Precedence, highest first: command line, environment (``DSPY_LOCAL_<KEY>``),
``[tool.dspy_local]`` in pyproject.toml, built-in default. Per-prompt
overrides (``[tool.dspy_local.prompts.<name>]``) apply on top of the project
table but under the command line and environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dspy_local.core.defaults import DEFAULT_MODEL, ENV_PREFIX, LOOKALIKE, PROMPT_FILES
from pytest_dspy_local.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

BACKENDS = ("auto", "embedded", "ollama", "openai")
OPTIMIZERS = ("mipro", "bootstrap", "gepa")
TABLE = "tool.dspy_local"
MIN_N_CTX = 512  # DSPy's JSONAdapter system prompt alone runs to a few hundred tokens


@dataclass(frozen=True)
class Budget:
    """How much one prompt's optimizer may spend: model requests, or wall-clock seconds."""

    calls: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.calls} model calls" if self.calls is not None else f"{(self.seconds or 0) / 60:g} minutes"


@dataclass(frozen=True)
class Settings:
    """Every setting the plugin reads, with its default."""

    model: str = DEFAULT_MODEL
    backend: str = "auto"
    base_url: str | None = None
    threshold: float = 0.5
    max_examples: int | None = None
    prompt_files: tuple[str, ...] = PROMPT_FILES
    timeout: float = 120.0
    max_tokens: int = 256
    concurrency: int | None = None  # most requests in flight per model; None: the backend's default
    temperature: float = 0.0
    seed: int = 0
    n_ctx: int = 8192
    optimizer: str = "mipro"
    train_fraction: float = 0.5
    prompt_model: str | None = None
    prompt_backend: str = "auto"
    prompt_base_url: str | None = None
    allow_hosts: tuple[str, ...] = ()
    cache_dir: str = ".dspy_cache"
    strict_model: bool = False
    strict_snapshots: bool = False  # CI: a prompt without a baseline, or an unused snapshot file, fails
    alpha: float = 0.05
    min_delta: float = 0.0
    repeats: int = 1
    require_transfer: bool = False
    # --optimize keeps a candidate only when its held-out gain passes a one-sided paired test at
    # optimize_alpha and exceeds optimize_min_gain (core/acceptance.py); the budget stops the optimizer.
    optimize_alpha: float = 0.05
    optimize_min_gain: float = 0.0
    optimize_budget: Budget | None = None
    prompts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    optimizers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    targets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # [tool.dspy_local.targets.<name>]

    def with_paths_from(self, root: Path) -> Settings:
        """A relative ``gguf:`` path that does not exist from the current directory is read from ``root``."""
        return dataclasses.replace(self, model=_gguf_from(self.model, root),
                                   prompt_model=_gguf_from(self.prompt_model, root) if self.prompt_model else None)

    def for_prompt_model(self) -> Settings | None:
        """Settings for the proposal model, or None when it is the task model."""
        if self.prompt_model is None:
            return None
        return dataclasses.replace(
            self, model=self.prompt_model, backend=self.prompt_backend, base_url=self.prompt_base_url
        )

    def for_target(self, name: str) -> Settings:
        """Settings for target model ``name`` (its backend, model and base_url; the rest as the task model's)."""
        table = self.targets[name]
        return dataclasses.replace(self, model=table["model"], backend=table.get("backend", "auto"),
                                   base_url=table.get("base_url"))


@dataclass(frozen=True)
class RunFlags:
    """What this run was asked to do, from command-line flags only (never from pyproject)."""

    # None, "better" (--optimize), "force" (--optimize=force) or "stale" (--optimize=stale)
    optimize: str | None = None
    update_baseline: bool = False
    allow_egress: bool = False
    no_cache: bool = False
    clear_cache: bool = False
    audit: Path | None = None
    json_report: Path | None = None
    html_report: Path | None = None
    targets: tuple[str, ...] = ()  # --dspy-target names as given ("all" expands in RunSettings.targets)


@dataclass(frozen=True)
class RunSettings:
    """Everything one run was configured with, resolved once at start."""

    settings: Settings
    pinned: frozenset[str]  # keys set on the command line or in the environment
    flags: RunFlags

    def for_prompt(self, name: str) -> Settings:
        """The settings with ``[tool.dspy_local.prompts.<name>]`` applied."""
        return for_prompt(self.settings, self.pinned, name)

    def targets(self) -> tuple[str, ...]:
        """The target models this run checks transfer on (``--dspy-target``; ``all``: every configured one)."""
        names = self.flags.targets
        if "all" in names:
            return tuple(sorted(self.settings.targets))
        known = self.settings.targets
        for name in names:
            if name not in known:
                have = ", ".join(sorted(known)) or "none is configured"
                raise UsageError(f"--dspy-target={name}: no [{TABLE}.targets.{name}] table in pyproject.toml "
                                 f"({have}); add one with backend, model and base_url, or pass all")
        return tuple(dict.fromkeys(names))

    def threshold(self, name: str, declared: float | None) -> float:
        """The pass mark: the prompt's table, then the module's ``threshold``, then the default."""
        table = self.settings.prompts.get(name, {})
        if "threshold" in table:
            return float(table["threshold"])
        return declared if declared is not None else self.settings.threshold


def _gguf_from(model: str, root: Path) -> str:
    if not model.startswith("gguf:"):
        return model
    path = Path(model[5:]).expanduser()
    if path.is_absolute() or path.exists() or not (root / path).exists():
        return model
    return f"gguf:{root / path}"


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(number):  # TOML and float() take nan and inf: no setting means either
        raise UsageError(f"{key} must be a finite number, got {value!r}")
    return number


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{key} must be a whole number, got {value!r}")
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        raise UsageError(f"{key} must be a whole number, got {value!r}") from None
    return number


def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _as_patterns(key: str, value: Any) -> tuple[str, ...]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, str) for p in items):
        raise UsageError(f"{key} must be a list of glob patterns such as [\"prompt_*.py\"], got {value!r}")
    for pattern in items:
        # Prompt modules are .py files named by the pattern (no directories): anything else collects nothing.
        if not pattern.endswith((".py", "*")) or "/" in pattern:
            raise UsageError(f"{key}: {pattern!r} can never match a prompt module (a .py file name, no "
                             "directory); use a pattern such as \"prompt_*.py\"")
    return tuple(items)


def _as_hosts(key: str, value: Any) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(h, str) and h for h in items):
        raise UsageError(f"{key} must be a list of hosts such as [\"gpu-box.lan\", \"10.0.0.0/8\"], got {value!r}")
    return tuple(items)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise UsageError(f"{key} must be true or false, got {value!r}")


def _threshold(key: str, value: Any) -> float:
    number = _as_float(key, value)
    if not 0.0 <= number <= 1.0:
        raise UsageError(f"{key} must be between 0 and 1 (a mean metric), got {value!r}")
    return number


def _positive_int(key: str, value: Any) -> int:
    number = _as_int(key, value)
    if number < 1:
        raise UsageError(f"{key} must be at least 1, got {value!r}")
    return number


def _n_ctx(key: str, value: Any) -> int:
    number = _as_int(key, value)
    if number < MIN_N_CTX:
        raise UsageError(f"{key} must be at least {MIN_N_CTX} (tokens of context: DSPy's prompts alone take a few "
                         f"hundred; 8192 is the default), got {value!r}")
    return number


def _positive_float(key: str, value: Any) -> float:
    number = _as_float(key, value)
    if number <= 0:
        raise UsageError(f"{key} must be greater than 0, got {value!r}")
    return number


def _seed(key: str, value: Any) -> int:
    number = _as_int(key, value)
    if number < 0:  # llama.cpp reads a negative seed as "random": every run would answer differently
        raise UsageError(f"{key} must be 0 or more, got {value!r}")
    return number


def _backend(key: str, value: Any) -> str:
    return _as_str(key, value).lower()


def _optimizer(key: str, value: Any) -> str:
    name = _as_str(key, value).lower()
    if name not in OPTIMIZERS:
        hint = did_you_mean(name, OPTIMIZERS)
        raise UsageError(f"{key} must be one of {', '.join(OPTIMIZERS)}, got {value!r}" + (f";{hint}" if hint else ""))
    return name


def _fraction(key: str, value: Any) -> float:
    number = _as_float(key, value)
    if not 0.0 < number < 1.0:
        raise UsageError(f"{key} must be between 0 and 1 (exclusive), got {value!r}")
    return number


def _unit(key: str, value: Any) -> float:
    number = _as_float(key, value)
    if not 0.0 <= number <= 1.0:
        raise UsageError(f"{key} must be between 0 and 1, got {value!r}")
    return number


def _temperature(key: str, value: Any) -> float:
    number = _as_float(key, value)
    if not 0.0 <= number <= 2.0:
        raise UsageError(f"{key} must be between 0 and 2, got {value!r}")
    return number


_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _budget(key: str, value: Any) -> Budget:
    text = str(value).strip().lower()
    usage = f"{key} must be a number of model calls (40) or a time (90s, 10m, 1h), got {value!r}"
    if isinstance(value, bool) or not text:
        raise UsageError(usage)
    number, unit = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip(), text.lstrip("0123456789. ")
    if unit and unit not in _UNITS:
        raise UsageError(usage)
    try:
        amount = float(number) if unit else int(number)
    except ValueError:
        raise UsageError(usage) from None
    if amount <= 0:
        raise UsageError(usage)
    return Budget(seconds=amount * _UNITS[unit]) if unit else Budget(calls=int(amount))


Parser = Callable[[str, Any], Any]

PARSERS: dict[str, Parser] = {
    "model": _as_str,
    "backend": _backend,
    "base_url": _as_str,
    "threshold": _threshold,
    "max_examples": _positive_int,
    "prompt_files": _as_patterns,
    "timeout": _positive_float,
    "max_tokens": _positive_int,
    "concurrency": _positive_int,
    "temperature": _temperature,
    "seed": _seed,
    "n_ctx": _n_ctx,
    "optimizer": _optimizer,
    "train_fraction": _fraction,
    "prompt_model": _as_str,
    "prompt_backend": _backend,
    "prompt_base_url": _as_str,
    "allow_hosts": _as_hosts,
    "cache_dir": _as_str,
    "strict_model": _as_bool,
    "strict_snapshots": _as_bool,
    "alpha": _fraction,
    "min_delta": _unit,
    "repeats": _positive_int,
    "require_transfer": _as_bool,
    "optimize_alpha": _fraction,
    "optimize_min_gain": _unit,
    "optimize_budget": _budget,
}
# Settings whose command-line flag is not --dspy-<key>.
CLI_FLAGS = {"optimize_budget": "--optimize-budget"}
PER_PROMPT_KEYS = frozenset(
    {"threshold", "max_examples", "max_tokens", "temperature", "seed", "alpha", "min_delta", "repeats", "concurrency",
     "require_transfer", "optimize_alpha", "optimize_min_gain", "optimize_budget"}
)
TARGET_KEYS = {"model": _as_str, "backend": _backend, "base_url": _as_str}
TABLES = ("prompts", "optimizers", "targets")


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to a misspelt ``word`` (difflib), or None when none is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" did you mean 'x'?"`` for the nearest choice, or nothing."""
    near = nearest(word, choices)
    return "" if near is None else f" did you mean {near!r}?"


def read_pyproject(path: Path | None) -> dict[str, Any]:
    """The ``[tool.dspy_local]`` table of ``path``, or {} when there is none."""
    if path is None or not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        if "dspy_local" not in text and not LOOKALIKE.search(text):
            return {}  # no table of ours: another tool's file is not ours to parse
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({exc}); fix the file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror}); make it readable") from None
    tool = data.get("tool", {})
    check_table_name(path, tool if isinstance(tool, dict) else {})
    table = tool.get("dspy_local", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{TABLE}] must be a table")
    return table


def _looks_like_ours(name: str) -> bool:
    flat = re.sub(r"[-_. ]", "", name.lower())
    return flat in {"dspylocal", "pytestdspylocal"} or difflib.SequenceMatcher(None, "dspy_local", name).ratio() >= 0.8


def check_table_name(path: Path, tool: Mapping[str, Any]) -> None:
    """A misspelt ``[tool.dspy-local]`` would be ignored silently, and the gate with it: refuse it."""
    for name in tool:
        if name != "dspy_local" and _looks_like_ours(name):
            raise UsageError(f"{path}: [tool.{name}] is not read; did you mean [{TABLE}]? rename the table "
                             "(underscore, no prefix)")


def _parse_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in table.items():
        if key == "prompts":
            parsed["prompts"] = _parse_prompt_tables(value, where)
            continue
        if key == "optimizers":
            parsed["optimizers"] = _parse_optimizer_tables(value, where)
            continue
        if key == "targets":
            parsed["targets"] = _parse_target_tables(value, where)
            continue
        if key not in PARSERS:
            known = ", ".join(sorted([*PARSERS, *TABLES]))
            hint = did_you_mean(key, [*PARSERS, *TABLES])
            raise UsageError(f"{where}: unknown key {key!r} in [{TABLE}];{hint} known keys: {known}")
        parsed[key] = PARSERS[key](f"{where} [{TABLE}] {key}", value)
    return parsed


def _parse_prompt_tables(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: [{TABLE}.prompts] must hold one table per prompt name")
    result: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        if not isinstance(table, dict):
            raise UsageError(f"{where}: [{TABLE}.prompts.{name}] must be a table")
        for key in table:
            if key not in PER_PROMPT_KEYS:
                known = ", ".join(sorted(PER_PROMPT_KEYS))
                hint = did_you_mean(key, PER_PROMPT_KEYS)
                raise UsageError(
                    f"{where}: unknown key {key!r} in [{TABLE}.prompts.{name}];{hint} known keys: {known}"
                )
        result[name] = {k: PARSERS[k](f"{where} [{TABLE}.prompts.{name}] {k}", v) for k, v in table.items()}
    return result


def _parse_optimizer_tables(value: Any, where: str) -> dict[str, dict[str, Any]]:
    # Knob names are checked against the optimizer's own signature when it runs.
    if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
        raise UsageError(f"{where}: [{TABLE}.optimizers] must hold one table per optimizer (mipro, bootstrap, gepa)")
    unknown = sorted(set(value) - set(OPTIMIZERS))
    if unknown:
        hint = did_you_mean(unknown[0], OPTIMIZERS)
        raise UsageError(f"{where}: unknown optimizer table [{TABLE}.optimizers.{unknown[0]}];{hint} use one of "
                          f"{', '.join(OPTIMIZERS)}")
    return {name: dict(table) for name, table in value.items()}


def _parse_target_tables(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
        raise UsageError(f"{where}: [{TABLE}.targets] must hold one table per target model, "
                         f"e.g. [{TABLE}.targets.prod] with backend, model and base_url")
    result: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        if name == "all":
            raise UsageError(f"{where}: [{TABLE}.targets.all]: 'all' means every target on the command line; "
                             "rename the table")
        unknown = sorted(set(table) - set(TARGET_KEYS))
        if unknown:
            hint = did_you_mean(unknown[0], TARGET_KEYS)
            raise UsageError(f"{where}: unknown key {unknown[0]!r} in [{TABLE}.targets.{name}];{hint} known keys: "
                             f"{', '.join(sorted(TARGET_KEYS))}")
        if "model" not in table:
            raise UsageError(f"{where}: [{TABLE}.targets.{name}] needs a model (and usually backend and base_url)")
        result[name] = {k: TARGET_KEYS[k](f"{where} [{TABLE}.targets.{name}] {k}", v) for k, v in table.items()}
    return result


# DSPY_LOCAL_* variables that are no setting but are read elsewhere (models/backends/base.py).
OTHER_ENV = frozenset({"API_KEY"})


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A misspelt ``DSPY_LOCAL_TRESHOLD`` would be ignored silently, and the gate with it."""
    known = [k.upper() for k in PARSERS] + sorted(OTHER_ENV)
    for name in sorted(environ):
        rest = name[len(ENV_PREFIX):]
        if name.startswith(ENV_PREFIX) and rest not in known:
            near = nearest(rest, known)
            hint = f" did you mean {ENV_PREFIX}{near}?" if near else ""
            raise UsageError(f"{name} is not a setting of pytest-dspy-local;{hint} rename or unset it")


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    _check_env_names(environ)
    parsed: dict[str, Any] = {}
    for key, parser in PARSERS.items():
        name = ENV_PREFIX + key.upper()
        if environ.get(name):
            parsed[key] = parser(name, environ[name])
    return parsed


def _from_cli(cli: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: PARSERS[key](CLI_FLAGS.get(key, f"--dspy-{key.replace('_', '-')}"), value)
        for key, value in cli.items()
        if value is not None and key in PARSERS
    }


def resolve(
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    pyproject: Path | None,
) -> tuple[Settings, frozenset[str]]:
    """Merge the sources by precedence; also return the keys set above pyproject."""
    table = _parse_table(read_pyproject(pyproject), str(pyproject))
    above = {**_from_env(environ), **_from_cli(cli)}
    merged = {**table, **above}
    return Settings(**merged), frozenset(above)


def for_prompt(settings: Settings, pinned: frozenset[str], name: str) -> Settings:
    """Apply ``[tool.dspy_local.prompts.<name>]``, except keys pinned by CLI or env."""
    overrides = {k: v for k, v in settings.prompts.get(name, {}).items() if k not in pinned}
    return dataclasses.replace(settings, **overrides) if overrides else settings
