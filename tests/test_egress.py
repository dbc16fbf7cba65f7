"""The egress guard: what it lets through, what it refuses and records, and the leaks it closes.

Network policy of these tests: connections go to 127.0.0.1 only; names that are blocked or
looked up are under ``.invalid`` (never resolvable). Decisions about other addresses are
tested with ``sys.audit`` (the event the guard sees, with no socket behind it) or
``EgressGuard.allows``: no packet is aimed at them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, SimpleNamespace

import pytest

from pytest_dspy_local.privacy import egress
from pytest_dspy_local.privacy.egress import BlockedAttempt, EgressBlocked, EgressGuard, hosts_from_url

EGRESS_PY = Path(egress.__file__)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 at a free port."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def _lookup_blocked() -> None:
    socket.getaddrinfo("blocked.invalid", 80)


def _where(code: CodeType) -> str:
    """``file:line`` of the first statement in the body of the function with ``code``."""
    return f"{code.co_filename}:{code.co_firstlineno + 1}"


def _fake_socket(family: int) -> SimpleNamespace:
    return SimpleNamespace(family=family)


def test_loopback_connect_is_allowed_and_counted(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    guard = EgressGuard([])
    with guard.active(label="t"):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        socket.create_connection(("localhost", port), timeout=5).close()
    assert guard.attempts == []
    assert guard.contacted("t")[f"127.0.0.1:{port}"] == 2


def test_blocked_lookup_raises_and_names_the_caller() -> None:
    guard = EgressGuard(["models.invalid"])
    with guard.active(label="prompt_triage.py::triage"), pytest.raises(EgressBlocked) as info:
        _lookup_blocked()
    where = _where(_lookup_blocked.__code__)
    expected = BlockedAttempt(
        "blocked.invalid", 80, "socket.getaddrinfo", "prompt_triage.py::triage", where, "_lookup_blocked"
    )
    assert guard.attempts == [expected]
    assert info.value.attempt == expected
    assert str(info.value) == (
        f"dspy-local blocked a connection to blocked.invalid:80 from {where} "
        "(not in allowed hosts: loopback, models.invalid); "
        "add it to allow_hosts in [tool.dspy_local] (or DSPY_LOCAL_ALLOW_HOSTS) if it is intended"
    )
    assert isinstance(info.value, PermissionError)


def test_swallowed_attempt_is_still_recorded() -> None:
    guard = EgressGuard([])
    with guard.active(label="t"), contextlib.suppress(Exception):  # as DSPy and LiteLLM do
        socket.getaddrinfo("swallowed.invalid", 443)
    assert [(a.host, a.port, a.label) for a in guard.attempts] == [("swallowed.invalid", 443, "t")]


def test_allowed_name_reaches_the_resolver() -> None:
    guard = EgressGuard(["Allowed.Invalid."])
    with guard.active(label="t"), pytest.raises(socket.gaierror):
        socket.getaddrinfo("allowed.invalid", 80)
    assert guard.attempts == []


def test_cidr_entries_allow_connections_in_the_network() -> None:
    guard = EgressGuard(["192.0.2.0/24", "2001:db8::/32"])
    with guard.active(label="t"):
        sys.audit("socket.connect", _fake_socket(socket.AF_INET), ("192.0.2.7", 8000))
        sys.audit("socket.connect", _fake_socket(socket.AF_INET6), ("2001:db8::1", 8000, 0, 0))
        with pytest.raises(EgressBlocked, match=r"198\.51\.100\.1:8000"):
            sys.audit("socket.connect", _fake_socket(socket.AF_INET), ("198.51.100.1", 8000))
    assert guard.contacted("t") == {"192.0.2.7:8000": 1, "[2001:db8::1]:8000": 1}


@pytest.mark.parametrize(
    ("entry", "host", "port", "allowed"),
    [
        ("gpu-box", "GPU-BOX.", 8000, True),
        ("gpu-box:8000", "gpu-box", 8000, True),
        ("gpu-box:8000", "gpu-box", 9000, False),
        ("gpu-box:8000", "gpu-box", None, True),
        ("http://gpu-box:8000/v1", "gpu-box", 8000, True),
        ("192.0.2.5", "::ffff:192.0.2.5", 80, True),
        ("[2001:db8::5]:443", "2001:db8::5", 443, True),
        ("2001:db8::5", "2001:db8::5%eth0", 1, True),
        ("10.0.0.0/8", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "11.1.2.3", 80, False),
        ("other.invalid", "gpu-box", 80, False),
    ],
)
def test_allow_list_entries(entry: str, host: str, port: int | None, allowed: bool) -> None:
    assert EgressGuard([entry], resolve_names=False).allows(host, port) is allowed


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"]
)
def test_loopback_is_always_allowed(host: str) -> None:
    assert EgressGuard([]).allows(host, 1234)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "foo.localhost", "127.1"])
def test_non_loopback_lookalikes_are_refused(host: str) -> None:
    assert not EgressGuard([]).allows(host, 1234)


@pytest.mark.parametrize("entry", ["", "gpu box", "10.0.0.0/33", "gpu:port", "http://"])
def test_bad_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed host"):
        EgressGuard([entry])


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("http://127.0.0.1:8080/v1", {"127.0.0.1"}),
        ("https://GPU-Box.example:443", {"gpu-box.example"}),
        ("http://[::1]:11434", {"::1"}),
        ("localhost:11434", {"localhost"}),
        (None, set()),
        ("", set()),
    ],
)
def test_hosts_from_url(url: str | None, hosts: set[str]) -> None:
    assert hosts_from_url(url) == hosts


def test_report_only_mode_records_without_raising() -> None:
    guard = EgressGuard([], block=False)
    with guard.active(label="t"), pytest.raises(socket.gaierror):
        socket.getaddrinfo("report-only.invalid", 80)
    with guard.active(label="t"):
        sys.audit("socket.connect", _fake_socket(socket.AF_INET), ("192.0.2.9", 80))
    assert [(a.host, a.blocked) for a in guard.attempts] == [
        ("report-only.invalid", False),
        ("192.0.2.9", False),
    ]
    assert guard.contacted("t") == {"192.0.2.9:80": 1}


def test_nothing_is_checked_outside_active() -> None:
    guard = EgressGuard([])
    with guard.active(label="t"):
        pass
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("outside.invalid", 80)
    assert guard.attempts == []


def test_a_thread_started_inside_active_is_checked() -> None:
    guard = EgressGuard([])
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            socket.create_connection(("thread.invalid", 80), timeout=5)
        except BaseException as exc:
            errors.append(exc)

    with guard.active(label="t"):
        worker = threading.Thread(target=connect)
        worker.start()
        worker.join()
    assert [type(e) for e in errors] == [EgressBlocked]
    [attempt] = guard.attempts
    assert (attempt.host, attempt.label, attempt.function) == ("thread.invalid", "t", "connect")


def test_urllib_surfaces_url_error_and_the_attempt_is_recorded() -> None:
    guard = EgressGuard([])
    with guard.active(label="t"), pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen("http://urllib.invalid/prices.json", timeout=5)
    assert isinstance(info.value.reason, EgressBlocked)
    [attempt] = guard.attempts
    assert (attempt.host, attempt.port) == ("urllib.invalid", 80)
    assert attempt.function == "test_urllib_surfaces_url_error_and_the_attempt_is_recorded"
    assert attempt.where.startswith(f"{__file__}:")


def test_take_returns_and_clears_one_label() -> None:
    guard = EgressGuard([], block=False)
    for label in ("a", "b", "a"):
        with guard.active(label=label):
            sys.audit("socket.gethostbyname", f"{label}.invalid")
    assert [a.host for a in guard.take("a")] == ["a.invalid", "a.invalid"]
    assert guard.take("a") == []
    assert [a.label for a in guard.attempts] == ["b"]


def test_innermost_guard_applies() -> None:
    outer, inner = EgressGuard([]), EgressGuard(["nested.invalid"], resolve_names=False)
    with outer.active(label="outer"), inner.active(label="inner"):
        sys.audit("socket.gethostbyname", "nested.invalid")
    assert outer.attempts == inner.attempts == []


def test_unix_sockets_are_allowed(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    guard = EgressGuard([])
    with guard.active(label="t"), socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
    server.close()
    assert guard.attempts == []


def test_other_socket_families_are_refused() -> None:
    guard = EgressGuard([])
    with guard.active(label="t"), pytest.raises(EgressBlocked):
        sys.audit("socket.connect", _fake_socket(40), (2, 1234))  # 40 is AF_VSOCK on Linux


@pytest.mark.parametrize(
    "args",
    [(), (object(),), (object(), object()), (None, ("x",)), (_fake_socket(socket.AF_INET), ("h", 1, 2), 3)],
)
def test_malformed_events_never_break_the_caller(args: tuple[object, ...]) -> None:
    guard = EgressGuard([])
    with guard.active(label="t"):
        for event in ("socket.connect", "socket.getaddrinfo", "socket.getnameinfo", "socket.sendto"):
            with contextlib.suppress(EgressBlocked):  # a refusal is fine; any other exception fails
                sys.audit(event, *args)


def test_install_is_idempotent() -> None:
    egress.install()
    egress.install()
    guard = EgressGuard([], block=False)
    with guard.active(label="t"):
        sys.audit("socket.gethostbyname", "once.invalid")
    assert len(guard.attempts) == 1


def test_close_known_leaks_exempts_loopback_from_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", *egress.LEAK_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "corp.example, 127.0.0.1")
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "False")
    egress.close_known_leaks()
    assert os.environ["no_proxy"] == os.environ["NO_PROXY"] == "corp.example,127.0.0.1,localhost,::1"
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert os.environ["LITELLM_OFFLINE_MODE"] == "False"  # what the user set wins


# Runs in a fresh interpreter so that the environment is set before DSPy (and LiteLLM)
# are imported. egress.py is loaded by path so that the package's __init__ cannot import
# DSPy first. The model server on 127.0.0.1 is a STAND-IN that answers one chat completion
# with a fixed reply: this test is about what DSPy does around a successful call, not about
# the model's output.
# The start of every probe: load egress.py by path (argv[1]); close the leaks if argv[2] says so.
LOAD_EGRESS = textwrap.dedent(
    """
    import importlib.util, json, sys

    spec = importlib.util.spec_from_file_location("egress_probe", sys.argv[1])
    egress = importlib.util.module_from_spec(spec)
    sys.modules["egress_probe"] = egress
    spec.loader.exec_module(egress)
    if sys.argv[2] == "closed":
        egress.close_known_leaks()
    """
)
LEAK_PROBE = LOAD_EGRESS + textwrap.dedent(
    """
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    REPLY = json.dumps({
        "id": "c", "object": "chat.completion", "created": 0, "model": "x",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }).encode()

    class StandInModelServer(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(REPLY)))
            self.end_headers()
            self.wfile.write(REPLY)

        def log_message(self, *args):
            pass

    import dspy

    guard = egress.EgressGuard([])
    if sys.argv[3] == "json_adapter":  # capability planning runs before the request
        lm = dspy.LM("openai/x", api_base="http://127.0.0.1:9/v1", api_key="k", num_retries=0)
        dspy.configure(lm=lm, adapter=dspy.JSONAdapter())
        call = lambda: dspy.Predict("question -> answer")(question="hi")
    else:  # the cost estimate runs after a completed call
        server = HTTPServer(("127.0.0.1", 0), StandInModelServer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        api_base = f"http://127.0.0.1:{server.server_port}/v1"
        lm = dspy.LM("openai/x", api_base=api_base, api_key="k", num_retries=0, cache=False)
        call = lambda: lm("hi")
    with guard.active(label="probe"):
        try:
            call()
        except Exception as exc:
            print("call failed:", type(exc).__name__, file=sys.stderr)
    print(json.dumps([[a.host, a.port, a.where, a.blocked] for a in guard.attempts]))
    print(json.dumps(guard.contacted("probe")))
    """
)


def _probe(tmp_path: Path, mode: str, trigger: str) -> tuple[list[list[object]], dict[str, int]]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DSPY_CACHEDIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", LEAK_PROBE, str(EGRESS_PY), mode, trigger],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    attempts_line, contacted_line = done.stdout.strip().splitlines()[-2:]
    return json.loads(attempts_line), json.loads(contacted_line)


@pytest.mark.parametrize("trigger", ["json_adapter", "completed_call"])
def test_dspy_price_map_fetch_is_a_real_leak(tmp_path: Path, trigger: str) -> None:
    attempts, _ = _probe(tmp_path, "open", trigger)
    assert [(host, port, blocked) for host, port, _, blocked in attempts] == [
        ("raw.githubusercontent.com", 443, True)
    ]
    assert "dspy/clients/model_metadata/__init__.py:" in str(attempts[0][2])


@pytest.mark.parametrize("trigger", ["json_adapter", "completed_call"])
def test_close_known_leaks_closes_the_price_map_fetch(tmp_path: Path, trigger: str) -> None:
    attempts, contacted = _probe(tmp_path, "closed", trigger)
    assert attempts == []
    assert contacted and all(endpoint.startswith("127.0.0.1:") for endpoint in contacted)


LITELLM_IMPORT_PROBE = LOAD_EGRESS + textwrap.dedent(
    """
    guard = egress.EgressGuard([])
    with guard.active(label="import"):
        import litellm
    print(json.dumps([[a.host, a.function] for a in guard.attempts]))
    """
)


@pytest.mark.parametrize(("mode", "leaks"), [("open", True), ("closed", False)])
def test_litellm_import_fetch_is_closed(tmp_path: Path, mode: str, leaks: bool) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", LITELLM_IMPORT_PROBE, str(EGRESS_PY), mode],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    attempts = json.loads(done.stdout.strip().splitlines()[-1])
    # More than one when the import outlasts the first backoff: LiteLLM retries from a daemon thread.
    assert len(attempts) >= 1 if leaks else attempts == []
    assert all(attempt == ["raw.githubusercontent.com", "_attempt_fetch_sync"] for attempt in attempts)
