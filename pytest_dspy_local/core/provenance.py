"""What a snapshot was optimized from, and whether it is stale (``pytest --optimize=stale``).

A snapshot's baseline file records its ``Provenance``: the prompt module's source, the
program as written in it, the data, the models, the optimizer and its settings, the seed
and the versions. ``staleness`` compares that record with the same facts now.

What makes a snapshot stale: anything that would make the optimizer start from something
else or judge candidates differently. That is the module's source (the metric lives there
too), the program as written (predictors, fields, their types and instructions), the data,
the task model's weights, the proposal model, the optimizer and its settings, the seed,
and the settings that shape the split and the task model's answers (``train_fraction``,
``max_examples``, ``temperature``, ``max_tokens``).

What does not: DSPy and plugin versions are reported, never counted. An upgrade changes
neither the prompt, its data nor the model; if it changes what the model is sent, the
evaluation against the baseline shows the effect on scores, which is the signal that
matters, and counting it would re-optimize every prompt on each dependency bump.
Neither do ``repeats`` or ``concurrency`` (same answers) or the model's endpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.data import Row
from pytest_dspy_local.core.evaluation import example_ids
from pytest_dspy_local.core.results import short_digest
from pytest_dspy_local.errors import PromptError

if TYPE_CHECKING:
    import dspy

NO_SNAPSHOT = "no snapshot"
OLDER_SNAPSHOT = "made before provenance was recorded"
NOT_IDENTIFIED = ""  # a separate proposal model is configured, but this run did not ask it for its digest
RUN_SETTINGS = ("train_fraction", "max_examples", "temperature", "max_tokens")


@dataclass(frozen=True)
class Provenance:
    """What one snapshot was optimized from.

    Fields that are None were not recorded: a snapshot made before provenance existed has
    only what its baseline file already held (data hash, models, optimizer, seed, versions).
    """

    data_sha256: str
    task_model: str  # the weights digest
    proposal_model: str | None  # its digest; None when the task model proposes
    optimizer: str | None
    knobs: Mapping[str, Any] | None  # [tool.dspy_local.optimizers.<optimizer>]
    seed: int | None
    module_sha256: str | None = None
    program_sha256: str | None = None
    rows: tuple[str, ...] | None = None  # each row's example id, in data order
    run_settings: Mapping[str, Any] | None = None  # RUN_SETTINGS
    versions: Mapping[str, str] = field(default_factory=dict)
    # --dspy-target results when the snapshot was made (core/transfer.provenance_entry); never counted as stale
    transfer: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The baseline file's ``provenance`` entry."""
        value = asdict(self)
        value["rows"] = None if self.rows is None else list(self.rows)
        if self.transfer is None:
            del value["transfer"]
        result: dict[str, Any] = plain(value)
        return result

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Provenance:
        """Inverse of ``to_json``."""
        rows = value.get("rows")
        return cls(
            str(value["data_sha256"]), str(value["task_model"]), value.get("proposal_model"),
            value.get("optimizer"), value.get("knobs"), value.get("seed"), value.get("module_sha256"),
            value.get("program_sha256"), None if rows is None else tuple(rows), value.get("run_settings"),
            dict(value.get("versions") or {}), value.get("transfer"),
        )

    @classmethod
    def from_baseline(cls, baseline: Mapping[str, Any]) -> Provenance:
        """The provenance a baseline file records; for an older file, what it already held."""
        try:
            if "provenance" in baseline:
                return cls.from_json(baseline["provenance"])
            optimization = baseline.get("optimization") or {}
            proposer = optimization.get("prompt_model")
            return cls(str(baseline["data"]["sha256"]), str(baseline["model"]["digest"]),
                       None if proposer is None else str(proposer["digest"]), optimization.get("optimizer"),
                       optimization.get("settings"), optimization.get("seed"),
                       versions=dict(baseline.get("versions") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PromptError(f"the baseline file's provenance is unreadable ({type(exc).__name__}: {exc}); "
                              "restore it from git or re-run `pytest --optimize`") from None


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so recorded and current compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def source_sha256(path: Path) -> str:
    """sha256 of a source file, line endings normalized (a CRLF checkout is the same source)."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _field(field_info: Any) -> dict[str, Any]:
    extra = field_info.json_schema_extra or {}
    return {"type": repr(field_info.annotation), "prefix": extra.get("prefix"), "desc": extra.get("desc")}


def _demo(demo: Any) -> Any:
    return dict(demo.toDict()) if hasattr(demo, "toDict") else demo


def program_sha256(program: dspy.Module) -> str:
    """sha256 of the program's shape: predictors, their fields and types, instructions and demos.

    Call it on the program as the module makes it, before a snapshot is loaded into it.
    """
    shape = {
        name: {
            "instructions": p.signature.instructions,
            "inputs": {k: _field(f) for k, f in p.signature.input_fields.items()},
            "outputs": {k: _field(f) for k, f in p.signature.output_fields.items()},
            "demos": [_demo(d) for d in p.demos],
        }
        for name, p in program.named_predictors()
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def row_ids(rows: Sequence[Row], inputs: Sequence[str]) -> tuple[str, ...]:
    """Each row's example id (as the baseline's per-example results name them)."""
    return example_ids([{k: r.values[k] for k in inputs} for r in rows])


def versions() -> dict[str, str]:
    """The DSPy and plugin versions of this run."""
    from importlib.metadata import version

    import dspy

    return {"dspy": dspy.__version__, "pytest-dspy-local": version("pytest-dspy-local")}


def _count(n: int, verb: str, first: bool) -> str:
    return f"{n} {'row' if n == 1 else 'rows'} {verb}" if first else f"{n} {verb}"


def data_change(recorded: Sequence[str] | None, current: Sequence[str] | None) -> str:
    """``data changed: 3 rows added, 1 removed`` (by example id); just ``data changed`` when unknown."""
    if recorded is None or current is None:
        return "data changed"
    # Counted by content: a repeat is ``id#n`` now, a plain ``id`` in files written before.
    now, then = Counter(i.partition("#")[0] for i in current), Counter(i.partition("#")[0] for i in recorded)
    added, removed = sum((now - then).values()), sum((then - now).values())
    counts = [(n, verb) for n, verb in ((added, "added"), (removed, "removed")) if n]
    if not counts:
        return "data changed: same inputs, expected outputs or order edited"
    return "data changed: " + ", ".join(_count(n, verb, i == 0) for i, (n, verb) in enumerate(counts))


def _changed_keys(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


def _source(r: Provenance, c: Provenance) -> str | None:
    changed = None not in (r.module_sha256, c.module_sha256) and r.module_sha256 != c.module_sha256
    return "module source changed" if changed else None


def _program(r: Provenance, c: Provenance) -> str | None:
    changed = None not in (r.program_sha256, c.program_sha256) and r.program_sha256 != c.program_sha256
    return "program changed" if changed else None


def _data(r: Provenance, c: Provenance) -> str | None:
    return None if r.data_sha256 == c.data_sha256 else data_change(r.rows, c.rows)


def _task_model(r: Provenance, c: Provenance) -> str | None:
    if r.task_model == c.task_model:
        return None
    return f"model digest changed: {short_digest(r.task_model)} -> {short_digest(c.task_model)}"


def _proposal_model(r: Provenance, c: Provenance) -> str | None:
    if (r.proposal_model is None) != (c.proposal_model is None):
        return "proposal model changed: " + ("the task model -> another" if r.proposal_model is None
                                             else "another -> the task model")
    # Digests compare only when this run identified the proposal model (--optimize modes do).
    if NOT_IDENTIFIED not in (r.proposal_model, c.proposal_model) and r.proposal_model != c.proposal_model:
        return (f"proposal model digest changed: {short_digest(r.proposal_model or '')} -> "
                f"{short_digest(c.proposal_model or '')}")
    return None


def _optimizer(r: Provenance, c: Provenance) -> str | None:
    if r.optimizer is not None and r.optimizer != c.optimizer:
        return f"optimizer changed: {r.optimizer} -> {c.optimizer}"
    changed = [] if r.knobs is None or c.knobs is None else _changed_keys(plain(r.knobs), plain(c.knobs))
    return f"optimizer settings changed: {', '.join(changed)}" if changed else None


def _seed(r: Provenance, c: Provenance) -> str | None:
    return None if r.seed is None or r.seed == c.seed else f"seed changed: {r.seed} -> {c.seed}"


def _run_settings(r: Provenance, c: Provenance) -> str | None:
    if r.run_settings is None or c.run_settings is None:
        return None
    recorded, current = plain(r.run_settings), plain(c.run_settings)
    changed = [f"{k} {recorded.get(k)} -> {current.get(k)}" for k in _changed_keys(recorded, current)]
    return f"settings changed: {', '.join(changed)}" if changed else None


_CHECKS: tuple[Callable[[Provenance, Provenance], str | None], ...] = (
    _source, _program, _data, _task_model, _proposal_model, _optimizer, _seed, _run_settings,
)


def staleness(recorded: Provenance | None, current: Provenance) -> list[str]:
    """Why a snapshot made from ``recorded`` is stale now (``[]``: it is fresh)."""
    if recorded is None:
        return [NO_SNAPSHOT]
    reasons = [OLDER_SNAPSHOT] if recorded.module_sha256 is None else []
    return reasons + [reason for check in _CHECKS if (reason := check(recorded, current)) is not None]


def version_changes(recorded: Provenance | None, current: Provenance) -> list[str]:
    """``dspy 3.4.0 -> 3.4.1``: version differences, reported but not counted as stale."""
    if recorded is None:
        return []
    was, now = recorded.versions, current.versions
    return [f"{name} {was[name]} -> {now.get(name)}" for name in sorted(was) if was[name] != now.get(name)]
