"""Checks that run once, at configure time, so a bad setting stops the run before any item.

Parsing (core/settings.py) checks each value's type and range; these check what needs
more than one value or another layer: allow-list entries, the backend a model (task, proposal or
target) resolves to, a target's host, and the optimizer's dependencies and knobs.
"""

from __future__ import annotations

from pytest_dspy_local.core.settings import RunSettings
from pytest_dspy_local.errors import UsageError


def check_run(run: RunSettings) -> None:
    """Raise ``UsageError`` for the first setting that cannot work."""
    from pytest_dspy_local.models.backends.builtin import check_base_url
    from pytest_dspy_local.privacy.audit import check_hosts, check_target_hosts

    settings = run.settings
    check_base_url(settings)
    check_hosts(settings)
    proposal = settings.for_prompt_model()
    if proposal is not None:
        check_base_url(proposal, "--dspy-prompt-base-url")
    targets = run.targets()
    for name in targets:
        try:
            check_base_url(settings.for_target(name), "base_url")
        except UsageError as exc:
            raise UsageError(f"[tool.dspy_local.targets.{name}]: {exc}") from None
    check_target_hosts(settings, targets)
    if run.flags.optimize is not None:
        from pytest_dspy_local.core.optimization import check_dependencies, route_knobs

        check_dependencies(settings.optimizer)
        route_knobs(settings.optimizer, settings.optimizers.get(settings.optimizer, {}))
