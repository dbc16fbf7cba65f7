"""Writing files the plugin owns: stable JSON, and atomic writes (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def stable_json(value: Any) -> str:
    """JSON with sorted keys and a trailing newline: an unchanged value never diffs."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _file_mode() -> int:
    # mkstemp creates 0600 files; a report or snapshot should get what the umask allows, as open() does.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``: a failed write names no file, a failed mkstemp names a temp file the user never saw."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def write_atomically(files: Mapping[Path, bytes]) -> None:
    """Write every file through a temp file, then rename them all: no half-written file, no temp file left.

    An ``OSError`` names the file (or its directory, when no temp file can be made there).
    """
    staged: list[tuple[Path, str]] = []
    mode = _file_mode()
    try:
        for path, content in files.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as exc:
                raise _naming(exc, path.parent) from None
            staged.append((path, tmp))  # before writing: a write that fails (disk full) still removes it
            try:
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(handle.fileno(), mode)
                    handle.write(content)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise _naming(exc, path) from None
        for path, tmp in staged:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _naming(exc, path) from None
    finally:
        for _, tmp in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
