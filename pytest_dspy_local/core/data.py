"""Evaluation data: rows from a data file beside the prompt module, or from a fixture.

Rows stay plain dicts here (no DSPy import); each remembers where it came from
so that every error and report can name the file and line.

A data file is read line by line (JSONL, CSV) and hashed as it is read: its text is never
held whole, and with ``limit`` (``max_examples``) only that many rows are kept, so a 100 MB
file costs the rows evaluated, not the file. Every line is still checked (decoded and
parsed), so a bad row anywhere names its line. YAML is one document and is parsed whole.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_dspy_local.errors import PromptError

DATA_SUFFIXES = (".jsonl", ".csv", ".yaml", ".yml")


@dataclass(frozen=True)
class Row:
    """One evaluation example and where it came from: ``file:line``, or ``fixture:n`` counting from 1 as lines do."""

    values: dict[str, Any]
    source: str


@dataclass(frozen=True)
class Dataset:
    """A prompt's examples, where they came from, and a digest of their content."""

    rows: list[Row]
    origin: str
    sha256: str

    @classmethod
    def from_file(cls, path: Path, limit: int | None = None) -> Dataset:
        """Load a data file, keeping its first ``limit`` rows (all when None); the digest covers the whole file."""
        digest = hashlib.sha256()
        rows = load_file(path, limit, digest)
        return cls(rows, path.name, digest.hexdigest())

    @classmethod
    def from_fixture(cls, name: str, value: Any) -> Dataset:
        """Take a fixture's value."""
        rows = from_fixture(name, value)
        canonical = json.dumps([r.values for r in rows], sort_keys=True, default=str)
        return cls(rows, f"fixture {name}", hashlib.sha256(canonical.encode()).hexdigest())


def data_files(module_path: Path) -> list[Path]:
    """Data files with the prompt module's stem, in suffix order."""
    return [p for s in DATA_SUFFIXES if (p := module_path.with_suffix(s)).is_file()]


def load_file(path: Path, limit: int | None = None, digest: Any = None) -> list[Row]:
    """Read a .jsonl, .csv or .yaml data file (its first ``limit`` rows); errors name the file and line.

    ``digest`` (a hashlib object), when given, is fed every byte of the file as it is read.
    """
    digest = digest if digest is not None else hashlib.sha256()
    with path.open("rb") as handle:
        lines = _text_lines(path, handle, digest)
        if path.suffix == ".jsonl":
            rows = _first(_jsonl(path, lines), limit)
        elif path.suffix == ".csv":
            rows = _first(_csv(path, lines), limit)
        else:
            rows = _first(iter(_yaml(path, "".join(lines))), limit)
    if not rows:
        raise PromptError(f"{path}: no examples; add at least one row")
    return rows


def _text_lines(path: Path, handle: Any, digest: Any) -> Iterator[str]:
    """The file's lines as text (line endings kept), hashing the bytes as they go by."""
    for number, raw in enumerate(handle, start=1):
        digest.update(raw)
        try:
            # utf-8-sig on the first line: Excel and Notepad start UTF-8 files with a BOM, which would
            # otherwise become part of the first CSV column's name or break the first JSON line.
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise PromptError(
                f"{path}:{number}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}: {exc.reason}); "
                "save the file as UTF-8"
            ) from None


def _first(rows: Iterator[Row], limit: int | None) -> list[Row]:
    """The first ``limit`` rows; the rest are still read (checked and hashed) but not kept."""
    kept: list[Row] = []
    for row in rows:
        if limit is None or len(kept) < limit:
            kept.append(row)
    return kept


def _jsonl(path: Path, lines: Iterable[str]) -> Iterator[Row]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or remove the line") from None
        yield _row(value, f"{path.name}:{number}", f"{path}:{number}")


def _csv(path: Path, lines: Iterable[str]) -> Iterator[Row]:
    reader = csv.DictReader(lines)
    if not reader.fieldnames:
        return
    for record in reader:
        where = f"{path}:{reader.line_num}"
        if None in record or any(v is None for v in record.values()):
            raise PromptError(f"{where}: the row has a different number of fields than the header; fix the row")
        yield Row(dict(record), f"{path.name}:{reader.line_num}")


def _yaml(path: Path, text: str) -> list[Row]:
    import yaml

    try:
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PromptError(f"{path}{line}: not valid YAML ({problem}); fix the file") from None
    if values is None:
        return []
    if not isinstance(values, list) or nodes is None:
        raise PromptError(f"{path}: must be a YAML list of mappings, one per example")
    lines = [item.start_mark.line + 1 for item in nodes.value]
    return [_row(v, f"{path.name}:{n}", f"{path}:{n}") for v, n in zip(values, lines, strict=True)]


def _row(value: Any, source: str, where: str) -> Row:
    if not isinstance(value, dict):
        raise PromptError(f"{where}: each example must be a mapping of field names to values, got {value!r}")
    return Row(dict(value), source)


def from_fixture(name: str, value: Any) -> list[Row]:
    """Rows from a ``<prompt>_dataset`` fixture's list of dicts or ``dspy.Example``s."""
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes, dict)):
        raise PromptError(f"fixture {name!r} must return a list of dicts or dspy.Example, got {type(value).__name__}")
    rows = []
    for number, item in enumerate(value, start=1):  # numbered from 1, as a data file's lines are
        values = item.toDict() if hasattr(item, "toDict") else item
        if not isinstance(values, dict):
            raise PromptError(
                f"{name}:{number}: fixture {name!r} returned a {type(item).__name__} here; return dicts or dspy.Example"
            )
        rows.append(Row(dict(values), f"{name}:{number}"))
    if not rows:
        raise PromptError(f"fixture {name!r} returned no examples; return at least one")
    return rows


def check_inputs(rows: Sequence[Row], inputs: Sequence[str], origin: str) -> None:
    """Every row must carry every input field."""
    for row in rows:
        missing = [name for name in inputs if name not in row.values]
        if missing:
            raise PromptError(
                f"{origin}: example {row.source} lacks input field {missing[0]!r} "
                f"(inputs: {', '.join(inputs)}); add it to the row or set `inputs = (...)` in the module"
            )
