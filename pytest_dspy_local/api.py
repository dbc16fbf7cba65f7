"""The public functions, for tests and production code alike; none of them needs pytest.

``load_program`` loads a prompt module's program with its optimized snapshot,
``local_lm`` makes a ``dspy.LM`` on a local model, ``evaluate`` scores a program.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.errors import PromptError

if TYPE_CHECKING:
    import dspy

    from pytest_dspy_local.core.results import Evaluation


def _import_module(path: Path) -> ModuleType:
    # A name derived from the path: loading the same file twice gives the same module object.
    name = "dspy_local_prompt_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PromptError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_program(path: str | Path) -> dspy.Module:
    """The prompt module's ``program`` with its snapshot (``__prompt_snapshots__/<stem>.program.json``) loaded.

    Only the module's own code runs; the snapshot is JSON and loading it executes nothing.
    Configure the model as usual (``dspy.configure(lm=...)``, or ``local_lm()`` below).
    """
    from pytest_dspy_local.core.snapshot import SnapshotPaths, load_into, read_baseline
    from pytest_dspy_local.core.spec import make_program
    from pytest_dspy_local.models.run_models import import_dspy

    module_path = Path(path).resolve()
    if not module_path.is_file():
        raise PromptError(f"{module_path}: no such prompt module")
    import_dspy(module_path.parent / ".dspy_cache")
    module = _import_module(module_path)
    if not hasattr(module, "program"):
        raise PromptError(f"{module_path}: defines no `program`")
    program = make_program(module, module_path)
    paths = SnapshotPaths.for_module(module_path)
    load_into(program, paths, read_baseline(paths))
    return program


def local_lm(model: str = "smollm2-135m", *, backend: str = "auto", base_url: str | None = None,
             max_tokens: int = 256) -> dspy.LM:
    """A ``dspy.LM`` on a local model through the plugin's built-in backends (no answer cache)."""
    from pytest_dspy_local.core.settings import Settings
    from pytest_dspy_local.models.backends.builtin import make_builtin_backend
    from pytest_dspy_local.models.engine import BackendEngine, make_lm
    from pytest_dspy_local.models.run_models import import_dspy

    import_dspy(None)
    settings = Settings(model=model, backend=backend, base_url=base_url, max_tokens=max_tokens)
    backend_object = make_builtin_backend(settings)
    engine = BackendEngine(backend_object, max_tokens=max_tokens, temperature=0.0, seed=0)
    return make_lm(engine, backend_object.info())


def evaluate(
    program: dspy.Module,
    dataset: Iterable[Any],
    metric: Callable[..., Any],
    *,
    inputs: Sequence[str] | None = None,
) -> Evaluation:
    """Evaluate ``program`` on ``dataset`` (dicts or ``dspy.Example``) with ``metric``.

    Uses the LM active in DSPy's settings (in a test: the ``dspy_lm`` fixture). Returns an
    ``Evaluation`` with ``.score``, ``.parse_failures`` and per-example ``.examples``.
    ``inputs`` defaults to the program's inputs (what its ``forward()`` takes, else its signature's input fields).
    """
    from pytest_dspy_local.core.data import check_inputs, from_fixture
    from pytest_dspy_local.core.evaluation import evaluate_rows
    from pytest_dspy_local.core.spec import program_fields

    fields = tuple(inputs) if inputs is not None else program_fields(program)[0]
    rows = from_fixture("dataset", list(dataset))
    check_inputs(rows, fields, "evaluate()")
    return evaluate_rows(program, rows, metric, fields)
