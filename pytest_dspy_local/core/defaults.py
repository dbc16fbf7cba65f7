"""The defaults and fixed names a run needs before it reads any setting.

A run whose project configures nothing (no ``[tool.dspy_local]``, no ``DSPY_LOCAL_*``
variable, no ``--dspy-*`` flag) and collects no prompt module uses only these: it never
imports ``settings.py`` (plugin/startup.py).
"""

from __future__ import annotations

DEFAULT_MODEL = "smollm2-135m"  # the embedded model (models/backends/embedded.py)
DEFAULT_BACKEND = "embedded"  # what backend "auto" resolves DEFAULT_MODEL to (models/backends/builtin.py)
PROMPT_FILES = ("prompt_*.py",)
ENV_PREFIX = "DSPY_LOCAL_"  # DSPY_LOCAL_<KEY> sets <key>
SNAPSHOT_DIR = "__prompt_snapshots__"  # beside each prompt module; see snapshot.py for why not __snapshots__
