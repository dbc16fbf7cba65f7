"""What the loopback test servers share: a quiet keep-alive HTTP handler that reads and sends JSON."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive, as real model servers), no access log, JSON bodies with a length."""

    protocol_version = "HTTP/1.1"
    content_type = "application/json"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: test and benchmark output should not carry access logs."""

    def error_payload(self, message: str) -> dict[str, Any]:
        """An error body in the served API's shape (Ollama's by default)."""
        return {"error": message}

    def read_json(self) -> dict[str, Any] | None:
        """The request body as a JSON object; answers 400 and returns None if it is not one."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.send_json(400, self.error_payload("invalid JSON body"))
            return None
        return body

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        """One JSON response."""
        self.send_bytes(status, json.dumps(payload).encode())

    def send_bytes(self, status: int, body: bytes) -> None:
        """One response with a length, so the connection can be kept alive."""
        self.send_response(status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
