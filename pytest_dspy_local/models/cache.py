"""The project-local response cache: JSON in SQLite, keyed by model digest and request.

DSPy's own disk cache stores pickles (diskcache); a pickle in a shared cache
directory is code a later run would execute. This cache stores only JSON text,
so reading it can never run code, and its key includes the weights' digest so
two models or quantizations never share answers.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from contextlib import closing
from dataclasses import asdict
from pathlib import Path

from pytest_dspy_local.errors import PromptError, UsageError
from pytest_dspy_local.models.backends.base import ChatRequest, ChatResult

SCHEMA_VERSION = 1
DB_NAME = "responses.sqlite3"


def request_key(model_id: str, request: ChatRequest) -> str:
    """A stable digest of everything that determines the model's answer."""
    payload = {"v": SCHEMA_VERSION, "model": model_id, **asdict(request)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


NO_CACHE_FIX = "or run with --dspy-no-cache"


def _sqlite_code(exc: BaseException) -> int:
    """SQLite's primary result code of ``exc`` (0 when it is not SQLite's)."""
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _damaged(exc: BaseException) -> bool:
    return _sqlite_code(exc) in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def _cannot_open(directory: Path, path: Path, exc: BaseException) -> UsageError:
    """The one line for a cache that cannot be opened: which file, why, and the fix."""
    blocking = next((p for p in (directory, *directory.parents) if p.exists()), directory)
    if not blocking.is_dir():
        return UsageError(f"cache_dir: {blocking} is a file, not a directory; set `cache_dir` in [tool.dspy_local] "
                          f"(or DSPY_LOCAL_CACHE_DIR) to a directory, or move the file away")
    if path.is_dir():
        return UsageError(f"answer cache {path} is a directory, not the cache file; move it away, "
                          f"or set `cache_dir` in [tool.dspy_local] (or DSPY_LOCAL_CACHE_DIR) to another directory")
    if _damaged(exc):
        return UsageError(f"answer cache {path} is damaged ({exc}); run once with --dspy-clear-cache to start a "
                          f"new one (or delete the file), {NO_CACHE_FIX}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return UsageError(f"cache_dir: cannot write the answer cache {path} ({reason}); make {blocking} writable "
                      f"(chmod u+w; chattr -i if it is immutable), set `cache_dir` to a writable directory, "
                      f"{NO_CACHE_FIX}")


def _connect(directory: Path, path: Path) -> sqlite3.Connection:
    directory.mkdir(parents=True, exist_ok=True)
    # xdist workers share the file: WAL lets readers and one writer proceed together.
    db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # A read-only file opens and reads fine, then fails at the first answer stored: try one now.
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES ('', '')")
        db.execute("ROLLBACK")
    except BaseException:
        db.close()
        raise
    return db


class ResponseCache:
    """A thread-safe, process-safe key -> ChatResult store under ``directory``.

    One that cannot be opened (``cache_dir`` names a file, the directory is not writable,
    the file is not a database) raises ``UsageError`` naming the file and the fix; one that
    fails later raises ``PromptError`` the same way.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / DB_NAME
        self._lock = threading.Lock()
        try:
            self._db = _connect(directory, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise _cannot_open(directory, self.path, exc) from None

    def _failed(self, exc: sqlite3.Error) -> PromptError:
        return PromptError(f"answer cache {self.path}: {exc}; run again with --dspy-clear-cache, {NO_CACHE_FIX}")

    def get(self, key: str) -> ChatResult | None:
        """The cached answer, or None (also for an entry this version cannot read)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        if row is None:
            return None
        try:
            return ChatResult(**json.loads(row[0]))
        except (TypeError, ValueError):
            return None

    def put(self, key: str, result: ChatResult) -> None:
        """Store an answer."""
        value = json.dumps(asdict(result), sort_keys=True)
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    def clear(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._db.execute("DELETE FROM responses")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def clear_cache(directory: Path) -> None:
    """Forget every answer (``--dspy-clear-cache``); a damaged cache file is replaced by a new one."""
    path = directory / DB_NAME
    try:
        cache = ResponseCache(directory)
    except UsageError:
        if not _is_damaged(path):
            raise
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        cache = ResponseCache(directory)
    cache.clear()
    cache.close()


def _is_damaged(path: Path) -> bool:
    """Is ``path`` a file SQLite cannot read as a database?"""
    if not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            db.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        return _damaged(exc)
    return False
