"""Every third-party import in the package is a declared dependency, and every declared one is used.

The package's modules are parsed, not imported: the check is fast, needs no model, and walks
whatever subpackage layout the tree has today.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pytest_dspy_local"
OPTIONAL_EXTRA = "optimize"
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _project() -> dict[str, object]:
    """The ``[project]`` table of the repository's pyproject.toml."""
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _names(requirements: object) -> set[str]:
    """Canonical distribution names of a list of requirement strings."""
    assert isinstance(requirements, list)
    return {canonicalize_name(Requirement(text).name) for text in requirements}


def declared() -> set[str]:
    """Distributions in ``[project] dependencies``."""
    return _names(_project()["dependencies"])


def optional() -> set[str]:
    """Distributions in the ``optimize`` extra that are not core dependencies."""
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    return _names(extras[OPTIONAL_EXTRA]) - declared()


def modules() -> list[Path]:
    """Every module of the package, in any subpackage."""
    found = sorted((ROOT / PACKAGE).rglob("*.py"))
    assert found, f"no modules under {ROOT / PACKAGE}"
    return found


def _catches_import_error(node: ast.Try) -> bool:
    """A ``try`` with a handler for a failed import (or a bare ``except``)."""
    caught = [h.type for h in node.handlers]
    named = {n.id for t in caught if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}
    return None in caught or bool(named & IMPORT_ERRORS)


def _type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _guarded_body(node: ast.AST) -> set[int]:
    """Ids of the statements ``node`` runs with a failed import caught, or never at run time."""
    if isinstance(node, ast.Try) and _catches_import_error(node):
        return {id(stmt) for stmt in node.body}
    if isinstance(node, ast.If) and _type_checking(node.test):
        return {id(stmt) for stmt in node.body}
    return set()


def _top(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Top-level names an import statement loads; relative imports load none from outside."""
    if isinstance(node, ast.ImportFrom):
        return [] if node.level or node.module is None else [node.module.split(".")[0]]
    return [alias.name.split(".")[0] for alias in node.names]


def imports(tree: ast.AST, guarded: bool = False) -> Iterator[tuple[str, bool]]:
    """(top-level name, guarded) for each import anywhere in ``tree``, inside functions too.

    Guarded: under a ``try`` that catches ImportError, or under ``if TYPE_CHECKING:``. A
    function body runs later, outside any ``try`` around its definition.
    """
    inside = _guarded_body(tree)
    for child in ast.iter_child_nodes(tree):
        safe = (guarded or id(child) in inside) and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield from ((name, safe) for name in _top(child))
        else:
            yield from imports(child, safe)


def third_party(name: str) -> bool:
    """Neither the standard library nor the package itself."""
    return name not in sys.stdlib_module_names and name != PACKAGE


@cache
def _installed() -> Mapping[str, list[str]]:
    """Import name -> distributions, for what is installed in this environment."""
    return packages_distributions()


def distributions(name: str) -> set[str]:
    """Distributions that provide import name ``name`` (its own name when none is installed)."""
    # An import behind a version check (tomli on 3.10) may not be installed here: its
    # distribution is named like the module, which the declared list must then contain.
    return {canonicalize_name(d) for d in _installed().get(name, [name])}


def package_imports() -> dict[str, set[tuple[str, bool]]]:
    """Third-party import names of the package -> {(module path, guarded)}."""
    found: dict[str, set[tuple[str, bool]]] = {}
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, guarded in imports(tree):
            if third_party(name):
                found.setdefault(name, set()).add((str(path.relative_to(ROOT)), guarded))
    return found


def string_constants() -> set[str]:
    """Every string literal in the package (names of modules imported by name at run time)."""
    return {
        node.value
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_every_import_is_declared() -> None:
    """Each third-party import, at module level or inside a function, is a declared dependency."""
    allowed = declared() | optional()
    missing = {
        name: sorted(where for where, _ in places)
        for name, places in package_imports().items()
        if not distributions(name) & allowed
    }
    assert not missing, f"imported but not in [project] dependencies of pyproject.toml: {missing}"


def test_optional_imports_are_guarded() -> None:
    """The ``optimize`` extra's modules are imported only under ``except ImportError`` (or for type checking)."""
    bare = {
        name: sorted(where for where, guarded in places if not guarded)
        for name, places in package_imports().items()
        if distributions(name) <= optional()
    }
    assert not {name: where for name, where in bare.items() if where}, f"unguarded optional imports: {bare}"


def test_every_dependency_is_imported() -> None:
    """Each declared dependency is imported by the package (nothing declared for nothing, like pluggy was)."""
    used = {d for name in package_imports() for d in distributions(name)}
    assert not declared() - used, f"declared but never imported: {sorted(declared() - used)}"


def test_optional_dependencies_are_checked_by_name() -> None:
    """The ``optimize`` extra's distributions are imported somewhere or checked by module name up front."""
    names = {name for name in package_imports() if distributions(name) <= optional()} | string_constants()
    unchecked = {d for d in optional() if not any(d in distributions(n) for n in names if n.isidentifier())}
    assert not unchecked, f"[{OPTIONAL_EXTRA}] extra never imported nor checked: {sorted(unchecked)}"


GUARDS = """
from . import sibling
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import optuna
try:
    import yaml
    def later():
        import numpy
except ImportError:
    pass
def f():
    import httpx.client
    try:
        import scipy.stats
    except (OSError, ModuleNotFoundError):
        pass
"""


def test_the_walk_sees_imports_inside_functions_and_their_guards() -> None:
    """Imports in functions are found, guards recognised, relative imports skipped."""
    found = list(imports(ast.parse(GUARDS)))
    assert found == [
        ("typing", False),
        ("optuna", True),
        ("yaml", True),
        ("numpy", False),
        ("httpx", False),
        ("scipy", True),
    ]


def test_distribution_names_are_canonical() -> None:
    """Import names map to canonical distribution names (``yaml`` -> ``pyyaml``)."""
    assert distributions("yaml") == {"pyyaml"}
    assert all(re.fullmatch(r"[a-z0-9-]+", d) for d in declared())
