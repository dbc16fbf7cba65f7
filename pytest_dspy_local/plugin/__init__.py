"""pytest integration: hooks, options, collection, run state, xdist hand-over.

The only layer that imports pytest.
"""

# TEMPORARY while the installed metadata still names `pytest_dspy_local.plugin` as the entry point.
from pytest_dspy_local.plugin.hooks import *  # noqa: F403
