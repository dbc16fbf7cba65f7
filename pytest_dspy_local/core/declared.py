"""Whether a ``prompt_*.py`` file is a prompt module, read from its syntax tree without running it.

Unrelated files that match the pattern (say ``prompt_templates.py``) are never imported,
and deciding costs one parse: neither DSPy nor the collection layer is imported for them.
"""

from __future__ import annotations

import ast
from pathlib import Path

REQUIRED = ("program", "metric")


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def declared_names(path: Path) -> set[str]:
    """Which of ``program`` and ``metric`` the module binds at top level (incl. under if/try/with)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set(REQUIRED)  # let the import report the syntax error
    names: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        names |= _bound_names(node)
        for block in ("body", "orelse", "finalbody"):
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                stack.extend(getattr(node, block, []))
        for handler in getattr(node, "handlers", []):
            stack.extend(handler.body)
    return names & set(REQUIRED)
