"""Snapshots of optimized prompts in ``__prompt_snapshots__/`` beside the prompt module.

Not syrupy's ``__snapshots__/``: syrupy scans the ``__snapshots__`` directory beside every
collected test file and deletes files it does not own on ``--snapshot-update`` (seen with
syrupy 7.0.2), which would delete these. A directory of their own keeps both tools safe.

Three files per prompt module ``prompt_triage.py``:

- ``prompt_triage.program.json``: the program state in DSPy's own JSON format
  (``module.save(path)``: instructions, field prefixes, demos). Never a pickle;
  loading it runs no code from the file.
- ``prompt_triage.prompt.md``: the messages the model sees for one example, for review.
- ``prompt_triage.baseline.json``: the per-example results later runs compare
  against, the program's shape, how it was optimized (optimizer, seed, scores
  before and after), and its ``provenance``: what it was optimized from (module
  source, program as written, data, models, settings, versions), which
  ``core/provenance.py`` compares with the present to tell a stale snapshot.

Writes are queued during the run and flushed once at session end, each file
atomically (temp file + rename), so a killed run leaves the old snapshot intact.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_dspy_local.core.data import Dataset
from pytest_dspy_local.core.defaults import SNAPSHOT_DIR
from pytest_dspy_local.core.files import stable_json
from pytest_dspy_local.core.provenance import Provenance, versions
from pytest_dspy_local.core.results import (
    ChangedRow,
    Evaluation,
    ModelIdentity,
    OptimizationOutcome,
    PromptTexts,
    short_digest,
)
from pytest_dspy_local.core.spec import PromptSpec
from pytest_dspy_local.errors import PromptError

if TYPE_CHECKING:
    import dspy

SUFFIXES = (".program.json", ".prompt.md", ".baseline.json")


@dataclass(frozen=True)
class SnapshotPaths:
    """Where one prompt module's snapshot files live."""

    program: Path
    prompt: Path
    baseline: Path

    @classmethod
    def for_module(cls, module_path: Path) -> SnapshotPaths:
        """The snapshot files of ``module_path``."""
        base = module_path.parent / SNAPSHOT_DIR / module_path.stem
        return cls(*(Path(f"{base}{suffix}") for suffix in SUFFIXES))


def module_of(snapshot_file: Path) -> Path | None:
    """The prompt module a snapshot file belongs to, or None if it is not a snapshot file."""
    for suffix in SUFFIXES:
        if snapshot_file.parent.name == SNAPSHOT_DIR and snapshot_file.name.endswith(suffix):
            return snapshot_file.parent.parent / (snapshot_file.name[: -len(suffix)] + ".py")
    return None


def program_shape(program: dspy.Module) -> dict[str, dict[str, list[str]]]:
    """Predictor names and their input and output field names."""
    return {
        name: {"inputs": list(p.signature.input_fields), "outputs": list(p.signature.output_fields)}
        for name, p in program.named_predictors()
    }


def program_bytes(program: dspy.Module) -> bytes:
    """The program state exactly as DSPy's ``module.save(path.json)`` writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.json"
        program.save(str(path))
        return path.read_bytes()


PLUGIN = "pytest-dspy-local"
# How to make a damaged snapshot file whole again; re-recording needs the bad file gone first.
RESTORE = "restore it from git, or delete it and record a new one with `pytest {how}`"


def read_baseline(paths: SnapshotPaths) -> dict[str, Any] | None:
    """The stored baseline, or None when there is none; one written by a newer plugin release is refused."""
    if not paths.baseline.is_file():
        return None
    fix = RESTORE.format(how="--dspy-update-baseline")
    try:
        value = json.loads(paths.baseline.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PromptError(f"{paths.baseline}: not valid JSON ({exc}); {fix}") from None
    problem = "it holds a JSON " + type(value).__name__ if not isinstance(value, dict) else baseline_problem(value)
    if problem is not None or not isinstance(value, dict):
        raise DamagedBaseline(f"{paths.baseline}: not a baseline file ({problem}); restore it from git, or replace "
                              "it with `pytest --dspy-update-baseline`")
    check_written_by(paths.baseline, value)
    return value


class DamagedBaseline(PromptError):
    """Valid JSON that is not a baseline (wrong fields or types): --dspy-update-baseline and --optimize replace it."""


_NUMBER = (int, float)
# Field -> the type a baseline's reader relies on; absent optional fields are fine.
_FIELDS: dict[str, tuple[type, ...]] = {
    "examples": (list,), "model": (dict,), "shape": (dict,), "history": (list,), "optimization": (dict,),
    "provenance": (dict,), "data": (dict,), "versions": (dict,), "score": _NUMBER, "n": (int,),
    "program_file_sha256": (str,),
}
_EXAMPLE_FIELDS: dict[str, tuple[type, ...]] = {"id": (str,), "source": (str,), "score": _NUMBER}
_TYPE_NAMES = {list: "a list", dict: "an object", str: "a string", int: "a number", float: "a number"}


def _wrong(where: str, value: Any, wanted: tuple[type, ...]) -> str | None:
    if isinstance(value, wanted) and not isinstance(value, bool):
        return None
    return f"{where} is {json.dumps(value)[:40]}, not {_TYPE_NAMES[wanted[0]]}"


def baseline_problem(value: Mapping[str, Any]) -> str | None:
    """What makes ``value`` unreadable as a baseline (wrong field types), or None when it reads."""
    if "examples" not in value:
        return "no `examples` list"
    for key, wanted in _FIELDS.items():
        if key in value and (problem := _wrong(key, value[key], wanted)):
            return problem
    for i, example in enumerate(value["examples"]):
        if not isinstance(example, dict):
            return f"examples[{i}] is not an object"
        for key, wanted in _EXAMPLE_FIELDS.items():
            if problem := _wrong(f"examples[{i}].{key}", example.get(key), wanted):
                return problem
    digest = value.get("model", {}).get("digest")
    if digest is not None and not isinstance(digest, str):
        return _wrong("model.digest", digest, (str,))
    if any(not isinstance(entry, dict) for entry in value.get("history", [])):
        return "history holds an entry that is not an object"
    return None


def _release(text: str) -> tuple[int, int] | None:
    """A version's (major, minor), or None when it does not start like ``1.2``."""
    match = re.match(r"(\d+)\.(\d+)", text)
    return None if match is None else (int(match[1]), int(match[2]))


def check_written_by(path: Path, baseline: Mapping[str, Any]) -> None:
    """Refuse a snapshot from a newer major or minor release: its files may mean what this one cannot read.

    Patch releases never change the snapshot files, so colleagues on 0.1.0 and 0.1.1 share them.
    """
    written_with = baseline.get("versions")
    recorded = written_with.get(PLUGIN) if isinstance(written_with, dict) else None
    if not isinstance(recorded, str):
        return
    from importlib.metadata import version

    running = version(PLUGIN)
    then, now = _release(recorded), _release(running)
    if then is not None and now is not None and then > now:
        raise PromptError(
            f"{path}: written by {PLUGIN} {recorded}, newer than this {running}; "
            f"upgrade the plugin (pip install -U {PLUGIN}) to read this snapshot"
        )


def load_into(program: dspy.Module, paths: SnapshotPaths, baseline: Mapping[str, Any] | None) -> bool:
    """Load the snapshot into ``program`` (True), or leave it as written (False: no snapshot).

    ``baseline`` is ``read_baseline(paths)``, read once by the caller; its shape is checked first.
    """
    if not paths.program.is_file():
        return False
    if baseline is not None and baseline.get("shape") != program_shape(program):
        raise PromptError(
            f"{paths.program}: the snapshot was made for a program of another shape "
            f"(saved {baseline.get('shape')}, now {program_shape(program)}); re-run `pytest --optimize`"
        )
    try:
        json.loads(paths.program.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PromptError(f"{paths.program}: not valid JSON ({exc}); {RESTORE.format(how='--optimize')}") from None
    try:
        program.load(str(paths.program))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise PromptError(
            f"{paths.program}: cannot be loaded into the module's program ({type(exc).__name__}: {exc}); "
            "re-run `pytest --optimize`"
        ) from None
    return True


def recorded_provenance(paths: SnapshotPaths, baseline: Mapping[str, Any] | None) -> Provenance | None:
    """What the snapshot was optimized from, or None when there is no snapshot (no program file)."""
    if baseline is None or not paths.program.is_file():
        return None
    try:
        return Provenance.from_baseline(baseline)
    except PromptError as exc:
        raise PromptError(f"{paths.baseline}: {exc}") from None


def render_prompt(name: str, program: dspy.Module, inputs: Mapping[str, Any]) -> str:
    """The messages each predictor sends for ``inputs``, as Markdown a reviewer reads in a diff."""
    import dspy

    adapter = dspy.JSONAdapter()
    lines = [f"# Prompt `{name}` as the model sees it", "",
             "Rendered by pytest-dspy-local with DSPy's JSONAdapter for the first example.", ""]
    for predictor_name, predictor in program.named_predictors():
        values = {f: inputs.get(f, f"{{{f}}}") for f in predictor.signature.input_fields}
        messages = adapter.format(predictor.signature, predictor.demos, values)
        lines += [f"## Predictor `{predictor_name}`", ""]
        for message in messages:
            lines += [f"### {message['role']}", "", "````text", str(message["content"]).rstrip(), "````", ""]
    return "\n".join(lines).rstrip() + "\n"


def _cell(values: Mapping[str, Any] | None) -> str:
    if values is None:
        return "*(did not parse)*"
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return text.replace("|", "\\|").replace("\n", " ")


def _rows_table(title: str, rows: Sequence[ChangedRow]) -> list[str]:
    if not rows:
        return [f"### {title} (0)", ""]
    lines = [f"### {title} ({len(rows)})", "", "| row | input | expected | old answer | new answer |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.source} | {_cell(r.inputs)} | {_cell(r.expected)} | {_cell(r.old)} | {_cell(r.new)} |"
              for r in rows]
    return [*lines, ""]


def review_markdown(outcome: OptimizationOutcome) -> str:
    """For the snapshot's reviewer: the held-out rows the new program wins and loses, and the demos it changes."""
    if not outcome.kept:
        return ""
    lines = ["", "## What changed on the held-out rows", "",
             f"{outcome.optimizer}: held-out {outcome.before:.3f} -> {outcome.after:.3f} {outcome.test_text}.", ""]
    lines += _rows_table("Won: the new program scores higher", outcome.won)
    lines += _rows_table("Lost: the new program scores lower", outcome.lost)
    for title, demos in (("Demos added", outcome.demos_added), ("Demos removed", outcome.demos_removed)):
        lines += [f"### {title} ({len(demos)})", "", *(f"- `{d}`" for d in demos), ""]
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Recording:
    """What a snapshot records: the prompt, its data, its evaluation, how it was optimized, by which models."""

    spec: PromptSpec
    dataset: Dataset
    evaluation: Evaluation
    outcome: OptimizationOutcome | None
    model: ModelIdentity
    prompt_model: ModelIdentity | None
    provenance: Provenance | None = None  # when optimized: what the snapshot is made from


def _model_json(model: ModelIdentity) -> dict[str, str]:
    return {"backend": model.backend, "model": model.model, "digest": model.digest}


def baseline_document(recording: Recording) -> dict[str, Any]:
    """The baseline file's content: per-example results, shape and provenance (no timestamps)."""
    spec, dataset, result, outcome = recording.spec, recording.dataset, recording.evaluation, recording.outcome
    document: dict[str, Any] = {
        "prompt": spec.name,
        "shape": program_shape(spec.program),
        "score": round(result.score, 6),
        "n": result.n,
        "parse_failures": result.parse_failures,
        "examples": [
            {"id": e.id, "source": e.source, "score": round(e.score, 6), "parsed": e.error is None}
            for e in result.examples
        ],
        "model": _model_json(recording.model),
        "data": {"origin": dataset.origin, "sha256": dataset.sha256},
        "repeats": result.repeats,
        "versions": versions(),
    }
    if recording.provenance is not None:
        document["provenance"] = recording.provenance.to_json()
    if outcome is not None:
        document["optimization"] = {
            "optimizer": outcome.optimizer,
            "settings": dict(outcome.knobs),
            "seed": outcome.seed,
            "train_examples": outcome.train,
            "heldout_examples": outcome.heldout,
            "heldout_score_before": round(outcome.before, 6),
            "heldout_score_after": round(outcome.after, 6),
            "decision": outcome.summary,
            "test": outcome.test,
            "p_value": outcome.p_value,
            "ci": list(outcome.ci),
            "alpha": outcome.alpha,
            "min_gain": outcome.min_gain,
            "significant": outcome.significant,
            "heldout_won": [c.source for c in outcome.won],
            "heldout_lost": [c.source for c in outcome.lost],
            "budget": outcome.budget or None,
            "budget_reached": outcome.budget_reached,
            "prompt_model": None if recording.prompt_model is None else _model_json(recording.prompt_model),
        }
    return document


def history(previous: Mapping[str, Any] | None, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The score history: the previous baseline's, plus this one unless it repeats the last entry."""
    entries = list((previous or {}).get("history", []))
    optimization = document.get("optimization")
    label = f"optimize {optimization['optimizer']}" if optimization else "update-baseline"
    entry = {"label": label, "score": document["score"], "n": document["n"],
             "model": short_digest(document["model"]["digest"])}
    if not entries or entries[-1] != entry:
        entries.append(entry)
    return entries


def snapshot_files(recording: Recording, paths: SnapshotPaths, previous: Mapping[str, Any] | None) -> dict[Path, bytes]:
    """The snapshot files to write for a prompt (``previous`` is the baseline they replace)."""
    document = baseline_document(recording)
    spec, outcome = recording.spec, recording.outcome
    if outcome is None and previous is not None and "optimization" in previous:
        # --dspy-update-baseline re-records results; the program, and how it was made, are unchanged.
        document["optimization"] = previous["optimization"]
        document.pop("provenance", None)
        if "provenance" in previous:
            document["provenance"] = previous["provenance"]
        document["history"] = history(previous, {**document, "optimization": None})
    else:
        document["history"] = history(previous, document)
    files: dict[Path, bytes] = {}
    if outcome is not None:
        inputs = outcome.render_inputs
        files[paths.program] = program_bytes(spec.program)
        files[paths.prompt] = (render_prompt(spec.name, spec.program, inputs) + review_markdown(outcome)).encode()
    # The baseline is renamed last and names the program file it goes with: a run killed between
    # the renames leaves a pair that snapshot_mismatch() reports, never a silent mix.
    program = files.get(paths.program) or (paths.program.read_bytes() if paths.program.is_file() else None)
    if program is not None:
        document["program_file_sha256"] = hashlib.sha256(program).hexdigest()
    files[paths.baseline] = stable_json(document).encode()
    return files


def snapshot_mismatch(paths: SnapshotPaths, baseline: Mapping[str, Any] | None) -> str | None:
    """Why the program file is not the one the baseline was recorded with (an interrupted write), if so."""
    recorded = (baseline or {}).get("program_file_sha256")
    if not recorded or not paths.program.is_file():
        return None
    if hashlib.sha256(paths.program.read_bytes()).hexdigest() == recorded:
        return None
    return (f"snapshot incomplete: {paths.program.name} is not the program {paths.baseline.name} was recorded "
            "with (an interrupted --optimize?)")


def prompt_texts(spec: PromptSpec, dataset: Dataset, paths: SnapshotPaths) -> PromptTexts:
    """The prompt as rendered now (first example) and as stored with the snapshot, for reports."""
    inputs = {k: dataset.rows[0].values[k] for k in spec.inputs}
    stored = paths.prompt.read_text(encoding="utf-8") if paths.prompt.is_file() else None
    return PromptTexts(render_prompt(spec.name, spec.program, inputs), stored)
