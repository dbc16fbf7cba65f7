"""Command-line options (one group, one ``--dspy-`` prefix, names as constants) and the
one place that reads them: ``resolve`` turns flags, environment and pyproject.toml into
the run's ``RunSettings``; ``configured`` tells whether the project configures the plugin
at all. No other module calls ``getoption``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dspy_local.core.defaults import ENV_PREFIX, LOOKALIKE

if TYPE_CHECKING:
    from pytest_dspy_local.core.settings import RunFlags, RunSettings

MODEL = "--dspy-model"
BACKEND = "--dspy-backend"
BASE_URL = "--dspy-base-url"
THRESHOLD = "--dspy-threshold"
MAX_EXAMPLES = "--dspy-max-examples"
CONCURRENCY = "--dspy-concurrency"
OPTIMIZER = "--dspy-optimizer"
PROMPT_MODEL = "--dspy-prompt-model"
PROMPT_BACKEND = "--dspy-prompt-backend"
PROMPT_BASE_URL = "--dspy-prompt-base-url"
OPTIMIZE = "--optimize"
OPTIMIZE_FORCE = "--optimize=force"
OPTIMIZE_STALE = "--optimize=stale"
UPDATE_BASELINE = "--dspy-update-baseline"
ALLOW_HOSTS = "--dspy-allow-hosts"
STRICT_MODEL = "--dspy-strict-model"
STRICT_SNAPSHOTS = "--dspy-strict-snapshots"
TARGET = "--dspy-target"
REQUIRE_TRANSFER = "--dspy-require-transfer"
ALLOW_EGRESS = "--dspy-allow-egress"
AUDIT = "--dspy-audit"
NO_CACHE = "--dspy-no-cache"
CLEAR_CACHE = "--dspy-clear-cache"
REPEATS = "--dspy-repeats"
ALPHA = "--dspy-alpha"
MIN_DELTA = "--dspy-min-delta"
JSON_REPORT = "--dspy-json"
HTML_REPORT = "--dspy-report"
OPTIMIZE_BUDGET = "--optimize-budget"

# option flag -> Settings field; every dest is the field name prefixed with dspy_
SETTING_OPTIONS = {
    MODEL: "model",
    BACKEND: "backend",
    BASE_URL: "base_url",
    THRESHOLD: "threshold",
    MAX_EXAMPLES: "max_examples",
    CONCURRENCY: "concurrency",
    OPTIMIZER: "optimizer",
    PROMPT_MODEL: "prompt_model",
    PROMPT_BACKEND: "prompt_backend",
    PROMPT_BASE_URL: "prompt_base_url",
    ALLOW_HOSTS: "allow_hosts",
    REPEATS: "repeats",
    ALPHA: "alpha",
    MIN_DELTA: "min_delta",
    OPTIMIZE_BUDGET: "optimize_budget",
}

_HELP = {
    MODEL: "model to evaluate with: smollm2-135m (embedded default), gguf:PATH, or a server's model name",
    BACKEND: "auto (default), embedded, ollama, openai, or a backend a conftest.py provides",
    BASE_URL: "base URL of an OpenAI-compatible server (ending in /v1) or of Ollama",
    THRESHOLD: "pass mark for prompt modules that set no `threshold` (0..1, default 0.5)",
    MAX_EXAMPLES: "evaluate at most N examples per prompt",
    CONCURRENCY: "most requests in flight per model (default: 8 for servers, 1 for the embedded model)",
    OPTIMIZER: "optimizer for --optimize: mipro (default, MIPROv2), bootstrap (BootstrapFewShot) or gepa",
    PROMPT_MODEL: "model that proposes instructions while optimizing (default: the task model)",
    PROMPT_BACKEND: "backend of --dspy-prompt-model (default auto)",
    PROMPT_BASE_URL: "server URL of --dspy-prompt-model",
    ALLOW_HOSTS: "hosts (comma-separated) prompts and data may reach besides loopback and the model servers",
    REPEATS: "evaluate each prompt N times (seeds seed..seed+N-1) and gate on the pooled result",
    ALPHA: "significance level of the regression test against the baseline (default 0.05)",
    MIN_DELTA: "a significant drop must also exceed this to fail (default 0)",
    OPTIMIZE_BUDGET: "stop each prompt's optimizer at this many model calls (40) or this time (10m); "
                     "the best candidate so far still has to pass the acceptance test",
}


def addoption(parser: pytest.Parser) -> None:
    """Register the plugin's options in their own --help group."""
    group = parser.getgroup("dspy-local", "DSPy prompt evaluation on a local model (pytest-dspy-local)")
    for flag, field in SETTING_OPTIONS.items():
        group.addoption(flag, dest=f"dspy_{field}", default=None, metavar=field.upper(), help=_HELP[flag])
    # `--optimize=force` is its own option string, so `--optimize PATH` never takes PATH as a value.
    group.addoption(OPTIMIZE, dest="dspy_optimize", action="store_const", const="better", default=None,
                    help="optimize each prompt (then evaluate); keep the result only if its held-out gain is "
                         "significant (one-sided paired test at optimize_alpha)")
    group.addoption(OPTIMIZE_FORCE, dest="dspy_optimize", action="store_const", const="force",
                    help="optimize each prompt and replace its snapshot even when the gain is not significant")
    group.addoption(OPTIMIZE_STALE, dest="dspy_optimize", action="store_const", const="stale",
                    help="optimize only prompts whose snapshot is missing or stale (its module, program, data, "
                         "model or optimizer settings changed), as --optimize does; evaluate the others")
    group.addoption(STRICT_MODEL, dest="dspy_strict_model", action="store_const", const=True, default=None,
                    help="fail (instead of warn) when a baseline was recorded with another model digest")
    group.addoption(STRICT_SNAPSHOTS, dest="dspy_strict_snapshots", action="store_const", const=True, default=None,
                    help="for CI: fail a prompt that has no baseline, and the run when a snapshot file is unused")
    group.addoption(TARGET, dest="dspy_target", action="append", default=[], metavar="NAME",
                    help="also score each prompt, as written and optimized, on target model NAME "
                         "([tool.dspy_local.targets.NAME]; repeatable, or `all`); reports whether the gain "
                         "carries over")
    group.addoption(REQUIRE_TRANSFER, dest="dspy_require_transfer", action="store_const", const=True, default=None,
                    help="with --optimize and --dspy-target: keep no candidate that loses significantly on a target")
    group.addoption(ALLOW_EGRESS, dest="dspy_allow_egress", action="store_true", default=False,
                    help="debugging: record connections outside the allowed hosts instead of blocking them")
    group.addoption(AUDIT, dest="dspy_audit", default=None, metavar="PATH",
                    help="write a JSON audit receipt: endpoints contacted, model calls, blocked attempts")
    group.addoption(NO_CACHE, dest="dspy_no_cache", action="store_true", default=False,
                    help="neither read nor write the project's answer cache")
    group.addoption(CLEAR_CACHE, dest="dspy_clear_cache", action="store_true", default=False,
                    help="empty the project's answer cache before the run")
    group.addoption(JSON_REPORT, dest="dspy_json", default=None, metavar="PATH",
                    help="write a machine-readable JSON summary of every prompt item")
    group.addoption(HTML_REPORT, dest="dspy_report", default=None, metavar="PATH",
                    help="write a self-contained HTML report for reviewers")
    group.addoption(UPDATE_BASELINE, dest="dspy_update_baseline", action="store_true", default=False,
                    help="record each evaluated prompt's per-example results as its new baseline")


def cli_values(config: pytest.Config) -> dict[str, Any]:
    """Settings given on the command line (None where not given)."""
    values = {field: config.getoption(f"dspy_{field}") for field in SETTING_OPTIONS.values()}
    return {**values, "strict_model": config.getoption("dspy_strict_model"),
            "require_transfer": config.getoption("dspy_require_transfer"),
            "strict_snapshots": config.getoption("dspy_strict_snapshots")}


def _path(config: pytest.Config, dest: str) -> Path | None:
    value = config.getoption(dest)
    return Path(value) if value else None


def run_flags(config: pytest.Config) -> RunFlags:
    """What this run was asked to do."""
    from pytest_dspy_local.core.settings import RunFlags

    return RunFlags(
        optimize=config.getoption("dspy_optimize"),
        update_baseline=bool(config.getoption("dspy_update_baseline")),
        allow_egress=bool(config.getoption("dspy_allow_egress")),
        no_cache=bool(config.getoption("dspy_no_cache")),
        clear_cache=bool(config.getoption("dspy_clear_cache")),
        audit=_path(config, "dspy_audit"),
        json_report=_path(config, "dspy_json"),
        html_report=_path(config, "dspy_report"),
        targets=tuple(name for value in config.getoption("dspy_target") for name in value.split(",") if name),
    )


def pyproject(config: pytest.Config) -> Path:
    """The project file whose ``[tool.dspy_local]`` table applies."""
    inipath = config.inipath
    if inipath is not None and inipath.name == "pyproject.toml":
        return inipath
    return config.rootpath / "pyproject.toml"


def resolve(config: pytest.Config) -> RunSettings:
    """The run's settings: command line, then environment, then pyproject.toml, then defaults.

    Raises ``UsageError`` naming the setting and the fix.
    """
    from pytest_dspy_local.core.settings import RunSettings
    from pytest_dspy_local.core.settings import resolve as resolve_settings

    settings, pinned = resolve_settings(cli_values(config), os.environ, pyproject(config))
    return RunSettings(settings.with_paths_from(config.rootpath), pinned, run_flags(config))


def configured(config: pytest.Config) -> bool:
    """Whether anything sets a setting or flag: a ``--dspy-*`` or ``--optimize`` flag, a ``DSPY_LOCAL_*``
    (or ``OLLAMA_HOST``) variable, or a project file that mentions ``dspy_local``.

    When nothing does, every setting is its default, which needs no checking; the run reads its
    settings only if it meets a prompt module (plugin/startup.py). Errs towards True: a mention in
    a comment costs a settings read, never a missed check.
    """
    if any(value not in (None, False, []) for dest, value in vars(config.option).items() if dest.startswith("dspy_")):
        return True
    # OLLAMA_HOST is read too: by the allow-list and by backend "auto".
    if any(name.startswith(ENV_PREFIX) or name == "OLLAMA_HOST" for name in os.environ):
        return True
    try:
        text = pyproject(config).read_bytes()
        # A misspelt table ([tool.dspy-local]) counts: reading the settings says what is wrong with it.
        return b"dspy_local" in text or LOOKALIKE.search(text.decode("utf-8", "replace")) is not None
    except FileNotFoundError:
        return False
    except OSError:  # unreadable: reading the settings says what is wrong with it
        return True
