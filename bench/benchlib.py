"""Shared pieces of the benchmarks: running pytest and measuring it, generated prompt projects, results.

The benchmarks reach the plugin only through the ``pytest`` command line (and its
``--dspy-json`` report) and its public functions, since the package's internals move.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from servers.latency_server import LatencyServer

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
EXAMPLE = ROOT / "example_project"
CONCURRENCY_FLAG = "--dspy-concurrency"
ALIAS = "smollm2"
TEAMS = ("billing", "tech", "account")
# Ticket templates per team: formatted with a product and a number, every ticket is distinct.
TEMPLATES = {
    "billing": ("I was charged twice for order {n} of the {p}.", "Please refund order {n}; the {p} never arrived.",
                "My invoice {n} lists the {p} at the wrong price.", "Why was my card billed again for the {p}?"),
    "tech": ("The {p} app crashes when I open settings (build {n}).", "Sync of my {p} fails with error {n}.",
             "The {p} page loads forever since update {n}.", "Notifications for the {p} stopped after version {n}."),
    "account": ("I cannot log in to my {p} account {n}.", "Please delete my {p} profile, user {n}.",
                "The password reset mail for {p} account {n} never came.", "Change the email on {p} account {n}."),
}
PRODUCTS = ("Pro plan", "photo printer", "smart lamp", "family bundle", "travel bag", "coffee grinder", "e-reader")


class OptionMissing(Exception):
    """The installed plugin does not know ``--dspy-concurrency`` yet."""


@dataclass
class Run:
    """One finished command: wall time, exit code, combined output, the process's peak RSS and CPU seconds."""

    wall: float
    returncode: int
    output: str
    max_rss_mb: float
    cpu: float = 0.0


@dataclass
class Result:
    """What a benchmark reports: ratios against their targets, the figures behind them, notes."""

    name: str
    compares: str
    target: str
    status: str = "ok"  # ok | not available | partial | skipped | failed
    ratios: dict[str, float | None] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return dict(self.__dict__)


def sys_path_for_servers() -> None:
    """Make ``servers.latency_server`` importable, as the test suite's conftest does."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


def bench_env() -> dict[str, str]:
    """The environment for pytest runs: no ``DSPY_LOCAL_*`` settings leaking in from the caller."""
    # Bytecode caching stays on: without it every run would recompile (and re-rewrite) the plugin.
    return {k: v for k, v in os.environ.items() if not k.startswith("DSPY_LOCAL_") and k != "PYTHONDONTWRITEBYTECODE"}


def run(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900.0) -> Run:
    """Run a command to completion; peak RSS is the process's own (``wait4``), not its children's."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env or bench_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = wait4(proc, timeout)
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, os.waitstatus_to_exitcode(status), text, usage.ru_maxrss / 1024, cpu)


def wait4(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int, Any]:
    """``os.wait4`` on the process, polling so that a timeout can stop it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
            return pid, status, usage
        time.sleep(0.02)
    raise TimeoutError(f"{proc.args!r} ran longer than {timeout:g} s")


def pytest(args: Sequence[str], cwd: Path, python: str = sys.executable, timeout: float = 900.0,
           env: dict[str, str] | None = None) -> Run:
    """``python -m pytest ARGS`` in ``cwd``; OptionMissing when it rejects --dspy-concurrency."""
    done = run([python, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd, env=env, timeout=timeout)
    if "unrecognized arguments" in done.output and CONCURRENCY_FLAG in done.output:
        raise OptionMissing(f"pytest rejects {CONCURRENCY_FLAG}: the plugin does not provide it yet")
    if done.returncode not in (0, 1):
        tail = "\n".join(done.output.splitlines()[-15:])
        raise RuntimeError(f"pytest {' '.join(args)} exited {done.returncode}:\n{tail}")
    return done


def concurrency_args(n: int | None) -> list[str]:
    """The flag for ``n`` requests in flight; none for None (the plugin's own default)."""
    return [] if n is None else [f"{CONCURRENCY_FLAG}={n}"]


def openai_args(base_url: str, report: Path, cache: bool = False) -> list[str]:
    """Plugin options for the openai backend on ``base_url`` with a JSON report; no answer cache unless asked."""
    args = ["-q", "--dspy-backend=openai", f"--dspy-base-url={base_url}", f"--dspy-model={ALIAS}",
            f"--dspy-json={report}"]  # fmt: skip
    return args if cache else [*args, "--dspy-no-cache"]


def read_report(path: Path) -> dict[str, Any]:
    """The ``--dspy-json`` report."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def per_example(report: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
    """(id, answer, score) of every example of every prompt, in report order: what must not change."""
    return [(e.get("id"), e.get("got"), e.get("score")) for p in report["prompts"] for e in p["examples"]]


def tickets(n: int) -> list[dict[str, str]]:
    """``n`` distinct support tickets with the team each belongs to."""
    rows = []
    for i in range(n):
        team = TEAMS[i % 3]
        template = TEMPLATES[team][(i // 3) % 4]
        rows.append({"ticket": template.format(n=10_000 + i, p=PRODUCTS[i % len(PRODUCTS)]), "team": team})
    return rows


TRIAGE_MODULE = '''"""Ticket triage, generated by bench/benchlib.py."""

from __future__ import annotations

from typing import Literal

import dspy


class Triage(dspy.Signature):
    """Route a support ticket to the team that handles it."""

    ticket: str = dspy.InputField()
    team: Literal["billing", "tech", "account"] = dspy.OutputField()


program = dspy.Predict(Triage)


def metric(example: dspy.Example, prediction: dspy.Prediction, trace: object | None = None) -> bool:
    """Right team or wrong team."""
    return bool(prediction.team == example.team)


threshold = 0.0
'''


def triage_project(root: Path, rows: Sequence[dict[str, str]], max_tokens: int = 40) -> Path:
    """A project with one prompt module, ``prompts/prompt_triage.py``, evaluated on ``rows``."""
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\ntestpaths = ["prompts"]\n\n[tool.dspy_local]\nmax_tokens = {max_tokens}\n'
    )
    (root / "prompts" / "prompt_triage.py").write_text(TRIAGE_MODULE)
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (root / "prompts" / "prompt_triage.jsonl").write_text(lines)
    return root


def replay(base_url: str, bodies: Sequence[dict[str, Any]], concurrency: int) -> float:
    """Send ``bodies`` with a bare httpx client, ``concurrency`` at a time; the wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=600, trust_env=False, limits=limits) as client:

        def post(body: dict[str, Any]) -> None:
            client.post(f"{base_url}/chat/completions", json=body).raise_for_status()

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(post, bodies))
        return time.perf_counter() - started


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory for one benchmark."""
    with tempfile.TemporaryDirectory(prefix=f"dspy-bench-{prefix}-") as tmp:
        yield Path(tmp)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes: where to write its JSON result."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json-out", type=Path, default=None, help="write the result as JSON here")
    return p


def server_parser(
    doc: str | None, examples: int | None = None, latency: float | None = None
) -> argparse.ArgumentParser:
    """``parser`` plus the latency server's options: --memo, and --examples / --latency where given a default."""
    p = parser(doc)
    if examples is not None:
        p.add_argument("--examples", type=int, default=examples)
    if latency is not None:
        p.add_argument("--latency", type=float, default=latency, help="seconds per answer")
    p.add_argument("--memo", type=Path, default=None, help="latency-server memo file to reuse across runs")
    return p


@contextmanager
def latency_triage(
    prefix: str, examples: int, latency: float, memo: Path | None
) -> Iterator[tuple[LatencyServer, Path]]:
    """A latency server and a triage project of ``examples`` tickets, for one benchmark's block."""
    sys_path_for_servers()
    from servers.latency_server import serve

    with workdir(prefix) as tmp, serve(latency, memo=memo) as server:
        yield server, triage_project(tmp, tickets(examples))


def finish(result: Result, json_out: Path | None) -> None:
    """Print the ratios and notes, and write the JSON result if asked."""
    print(f"== {result.name}: {result.status}")
    for key, value in result.ratios.items():
        print(f"   {key}: {'not available' if value is None else f'{value:.3f}'}")
    for note in result.notes:
        print(f"   note: {note}")
    if json_out is not None:
        json_out.write_text(json.dumps(result.as_dict(), indent=2, sort_keys=True, default=str))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either side is missing."""
    return None if a is None or b is None or b == 0 else a / b


@dataclass
class Pass:
    """One pytest run of a project against the latency server, as the server and the report saw it."""

    run: Run
    stats: dict[str, Any]
    report: dict[str, Any]

    @property
    def examples_per_s(self) -> float | None:
        """Requests answered per second of the server's busy window."""
        window = self.stats.get("window")
        return self.stats["requests"] / window if window else None


def plugin_pass(server: LatencyServer, project: Path, concurrency: int | None, extra: Sequence[str] = ()) -> Pass:
    """Evaluate ``project``'s prompts through the plugin on ``server`` at ``concurrency`` (None: no flag)."""
    report = project / f"report-{concurrency}.json"
    server.reset_stats()
    done = pytest([*openai_args(server.base_url, report), *concurrency_args(concurrency), *extra], project)
    return Pass(done, server.stats(), read_report(report))


def serial_fallback(server: LatencyServer, project: Path, concurrency: int, notes: list[str]) -> Pass | None:
    """The plugin at ``concurrency``; without the option, a serial run stands in for 1 and others are None."""
    try:
        return plugin_pass(server, project, concurrency)
    except OptionMissing as exc:
        if concurrency != 1:
            notes.append(f"concurrency {concurrency}: not available ({exc})")
            return None
        notes.append("concurrency 1: measured without the flag (the plugin without --dspy-concurrency is serial)")
        return plugin_pass(server, project, None)


def warm_pass(server: LatencyServer, project: Path, concurrency: int = 16) -> list[dict[str, Any]]:
    """Fill the memo with one plugin pass at no latency; the chat bodies it sent, in order."""
    server.record = True
    try:
        with server.warming():
            try:
                plugin_pass(server, project, concurrency)
            except OptionMissing:
                plugin_pass(server, project, None)
        return list(server.bodies)
    finally:
        server.record = False


def bare_pass(server: LatencyServer, bodies: Sequence[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Replay ``bodies`` with a bare httpx client; the server's stats and the client's wall time."""
    server.reset_stats()
    wall = replay(server.base_url, bodies, concurrency)
    return {**server.stats(), "client_wall": wall}


def pass_figures(p: Pass | None) -> dict[str, Any] | None:
    """The numbers of a plugin pass worth keeping."""
    if p is None:
        return None
    prompts = p.report.get("prompts") or [{}]
    return {"pytest_wall": round(p.run.wall, 3), "server_window": p.stats.get("window"),
            "requests": p.stats["requests"], "model_calls": p.stats["model_calls"],
            "max_in_flight": p.stats["max_in_flight"], "examples_per_s": p.examples_per_s,
            "item_seconds": [q.get("seconds") for q in prompts], "score": [q.get("score") for q in prompts],
            "peak_rss_mb": round(p.run.max_rss_mb, 1)}  # fmt: skip
