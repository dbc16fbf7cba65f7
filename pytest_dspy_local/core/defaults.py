"""The defaults and fixed names a run needs before it reads any setting.

A run whose project configures nothing (no ``[tool.dspy_local]``, no ``DSPY_LOCAL_*``
variable, no ``--dspy-*`` flag) and collects no prompt module uses only these: it never
imports ``settings.py`` (plugin/startup.py).
"""

from __future__ import annotations

import re

DEFAULT_MODEL = "smollm2-135m"  # the embedded model (models/backends/embedded.py)
DEFAULT_BACKEND = "embedded"  # what backend "auto" resolves DEFAULT_MODEL to (models/backends/builtin.py)
PROMPT_FILES = ("prompt_*.py",)
ENV_PREFIX = "DSPY_LOCAL_"  # DSPY_LOCAL_<KEY> sets <key>
SNAPSHOT_DIR = "__prompt_snapshots__"  # beside each prompt module; see snapshot.py for why not __snapshots__
# A table that looks like ours, misspelt or not: [tool.dspy_local], [tool.dspy-local], [tool.pytest-dspy-local]...
# A dependency named pytest-dspy-local does not match: only a name right after `tool.` does.
LOOKALIKE = re.compile(r"tool\s*\.\s*[\"']?(?:pytest[-_.]?)?dspy[-_. ]?local", re.IGNORECASE)
