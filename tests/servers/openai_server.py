"""Run llama-cpp-python's real OpenAI-compatible server on loopback, for the duration of a test session."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from pytest_dspy_local.models.backends.embedded import default_model_path

ALIAS = "smollm2"
START_TIMEOUT = 60.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(model: Path, port: int, alias: str, n_ctx: int = 4096, extra: Sequence[str] = ()) -> list[str]:
    """The server's command line (``extra``: more options, e.g. a chat format)."""
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        *extra,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        # One thread: on 2 shared cores the server's default (2 for prompt processing) ran a
        # request 5-10x slower under load than 1 thread does.
        "--n_threads", "1",
        "--n_threads_batch", "1",
        "--model_alias", alias,
    ]  # fmt: skip


def tail(log: IO[bytes], lines: int = 15) -> str:
    """The last lines the server wrote to stderr."""
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def wait_ready(
    proc: subprocess.Popen[bytes], base_url: str, log: IO[bytes], timeout: float, name: str = "llama_cpp.server"
) -> None:
    """Poll ``/models`` until it answers; raise with the stderr tail if server ``name`` dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer on {base_url} within {timeout:g} s:\n{tail(log)}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server, killing it if it does not exit promptly."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serve(
    model: Path | None = None, alias: str = ALIAS, timeout: float = START_TIMEOUT, n_ctx: int = 4096,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """Start ``python -m llama_cpp.server``; yields its base URL (ending in ``/v1``)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    # stderr goes to a file: uvicorn logs every request, and a full pipe would stall the server.
    with tempfile.TemporaryFile() as log:
        argv = command(model or default_model_path(), port, alias, n_ctx, extra)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_ready(proc, base_url, log, timeout)
            yield base_url
        finally:
            stop(proc)
