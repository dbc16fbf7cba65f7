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
from dataclasses import asdict
from pathlib import Path

from pytest_dspy_local.models.backends.base import ChatRequest, ChatResult

SCHEMA_VERSION = 1
DB_NAME = "responses.sqlite3"


def request_key(model_id: str, request: ChatRequest) -> str:
    """A stable digest of everything that determines the model's answer."""
    payload = {"v": SCHEMA_VERSION, "model": model_id, **asdict(request)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    """A thread-safe, process-safe key -> ChatResult store under ``directory``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_NAME
        self._lock = threading.Lock()
        # xdist workers share the file: WAL lets readers and one writer proceed together.
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> ChatResult | None:
        """The cached answer, or None (also for an entry this version cannot read)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return ChatResult(**json.loads(row[0]))
        except (TypeError, ValueError):
            return None

    def put(self, key: str, result: ChatResult) -> None:
        """Store an answer."""
        value = json.dumps(asdict(result), sort_keys=True)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, value))

    def clear(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._db.execute("DELETE FROM responses")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
