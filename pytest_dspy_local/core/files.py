"""Writing files the plugin owns: stable JSON, and atomic writes (temp file + rename)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import time
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


STALE_TEMP_SECONDS = 600.0  # staging a file takes milliseconds: an older temp file belongs to a killed run


def _remove_stale_temps(path: Path) -> None:
    """Delete ``.name.*.tmp`` files a killed earlier write left beside ``path`` (SIGKILL skips ``finally``)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if stale.stat().st_mtime < cutoff:
                stale.unlink()


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``: a failed write names no file, a failed mkstemp names a temp file the user never saw."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def write_atomically(files: Mapping[Path, bytes]) -> None:
    """Write every file through a temp file, then rename them all, in order: no half-written file, no temp file left.

    Files are renamed in the mapping's order, so a caller puts last the file that commits the
    others (a snapshot's baseline). An ``OSError`` names the file (or its directory, when no temp
    file can be made there). Temp files a killed earlier run left beside them are removed.
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
        for path in files:
            _remove_stale_temps(path)
    finally:
        for _, tmp in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
