"""Concurrent evaluation against a latency-bound server: same results, N in flight, exact audit.

The server (tests/servers/latency_server.py) answers every distinct request once with the
real SmolLM2 model, then serves it again after a fixed latency, concurrently: the shape of a
batching GPU server. Speed-up figures live in bench/bench_concurrency.py, not here.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OPENAI_MODEL, SENTIMENT_MODULE, PromptWriter
from servers.latency_server import LatencyServer, serve

from pytest_dspy_local.plugin.options import AUDIT, BACKEND, BASE_URL, CONCURRENCY, JSON_REPORT, MODEL, NO_CACHE

ADJECTIVES = ["great", "awful", "fine", "broken", "lovely", "slow", "sturdy", "flimsy"]
THINGS = ["kettle", "charger"]
ROWS = [{"review": f"A {a} {t}, would {'buy again' if i % 2 == 0 else 'return it'}",
         "sentiment": "positive" if i % 2 == 0 else "negative"}
        for i, (a, t) in enumerate((a, t) for t in THINGS for a in ADJECTIVES)]


@pytest.fixture(scope="module")
def latency_server() -> Iterator[LatencyServer]:
    """The latency-bound server (0.3 s per answer) on loopback."""
    with serve(0.3, alias=OPENAI_MODEL) as server:
        yield server


def _args(server: LatencyServer, *extra: str) -> list[str]:
    return [f"{BACKEND}=openai", f"{BASE_URL}={server.base_url}", f"{MODEL}={OPENAI_MODEL}", *extra]


def _examples(path: Path) -> list[dict[str, object]]:
    (prompt,) = json.loads(path.read_text())["prompts"]
    return [{k: e[k] for k in ("id", "source", "got", "score", "error")} for e in prompt["examples"]]


def test_concurrent_results_equal_serial_with_eight_in_flight(
    pytester: pytest.Pytester, write_prompt: PromptWriter, latency_server: LatencyServer
) -> None:
    write_prompt(rows=ROWS)
    with latency_server.warming():
        pytester.runpytest(*_args(latency_server, NO_CACHE, f"{CONCURRENCY}=1")).assert_outcomes(passed=1)
    runs = {}
    for n in (1, 8):
        latency_server.reset_stats()
        result = pytester.runpytest(*_args(latency_server, NO_CACHE, f"{CONCURRENCY}={n}", f"{JSON_REPORT}=r{n}.json"))
        result.assert_outcomes(passed=1)
        runs[n] = latency_server.stats()
    assert runs[1]["max_in_flight"] == 1 and runs[8]["max_in_flight"] == 8
    assert runs[1]["requests"] == runs[8]["requests"] == len(ROWS)
    assert _examples(pytester.path / "r8.json") == _examples(pytester.path / "r1.json")


@pytest.mark.fresh_cache
def test_cache_and_audit_counts_stay_exact_under_concurrency(
    pytester: pytest.Pytester, write_prompt: PromptWriter, latency_server: LatencyServer
) -> None:
    write_prompt(rows=ROWS)
    totals = []
    for _ in range(2):
        pytester.runpytest(*_args(latency_server, f"{CONCURRENCY}=8", f"{AUDIT}=a.json")).assert_outcomes(passed=1)
        receipt = json.loads((pytester.path / "a.json").read_text())
        (item,) = receipt["items"]
        totals.append((item["model_calls"], item["cached_answers"], item["endpoints"].get(latency_server.base_url)))
    assert totals == [(len(ROWS), 0, len(ROWS)), (0, len(ROWS), None)]


def test_egress_guard_sees_worker_threads(
    pytester: pytest.Pytester, write_prompt: PromptWriter, latency_server: LatencyServer
) -> None:
    leaky = SENTIMENT_MODULE.replace("def metric(example, prediction, trace=None):\n", (
        "def metric(example, prediction, trace=None):\n"
        "    import socket, threading\n"
        "    assert threading.current_thread().name.startswith('dspy-local-eval')\n"
        "    try:\n"
        "        socket.getaddrinfo('telemetry.invalid', 443)\n"
        "    except OSError:\n"
        "        pass\n"))
    write_prompt(rows=ROWS, module=leaky)
    result = pytester.runpytest(*_args(latency_server, f"{CONCURRENCY}=4"))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*dspy-local blocked a connection to telemetry.invalid:443*"])


def test_server_error_stops_the_item_and_leaves_nothing_running(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    # A real fault: one example longer than the server's context window (512 tokens here).
    rows = [*ROWS[:8], {"review": "very long " * 400, "sentiment": "negative"}, *ROWS[8:]]
    write_prompt(rows=rows)
    with serve(0.3, alias=OPENAI_MODEL, n_ctx=512) as server:
        result = pytester.runpytest(*_args(server, NO_CACHE, f"{CONCURRENCY}=4"))
        stats = server.stats()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*openai server at http://127.0.0.1:*/v1: HTTP 400*"])
    assert "Traceback" not in result.stdout.str()
    assert stats["in_flight"] == 0 and stats["requests"] < len(rows), "queued examples were cancelled"
    assert not [t for t in threading.enumerate() if t.name.startswith("dspy-local-eval")]


def _in_terminal(project: Path, *args: str) -> str:
    """Run pytest with its output on a pseudo-terminal, as a user at a shell sees it."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "CI")}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=project,
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=300)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_lines_in_a_terminal_quiet_with_q_and_under_xdist(
    pytester: pytest.Pytester, write_prompt: PromptWriter, latency_server: LatencyServer
) -> None:
    write_prompt(rows=ROWS)
    args = _args(latency_server, NO_CACHE, f"{CONCURRENCY}=1")
    with latency_server.warming():
        pytester.runpytest(*args).assert_outcomes(passed=1)
    shown = _in_terminal(pytester.path, *args)
    assert "dspy-local sentiment: " in shown and " examples/s, about " in shown, shown[-2000:]
    progress = [line for line in shown.split("\r\n") if "examples/s" in line]
    assert progress and not any("\r" in line for line in progress), "whole lines, no carriage-return redraws"
    assert "examples/s" not in _in_terminal(pytester.path, "-q", *args)
    assert "examples/s" not in _in_terminal(pytester.path, "-n", "2", *args)
