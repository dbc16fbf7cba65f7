"""Embedded limit: the plugin's embedded backend vs bare `llama_cpp.Llama.create_chat_completion`, same requests.

The chat requests the plugin makes for a generated triage prompt are recorded first (by
sending them through tests/servers/latency_server.py, which answers with the same GGUF).
Then, in alternating rounds: (a) pytest with ``--dspy-backend=embedded --dspy-no-cache``;
(b) in this process, the same GGUF loaded once with the plugin's settings (n_ctx 8192,
seed 0), and ``create_chat_completion`` on each recorded request's messages, JSON schema,
max_tokens, temperature and seed. Two measures: wall-clock examples/s (the plugin's over
the item's ``seconds`` in its ``--dspy-json`` report; median of rounds), and CPU seconds
per example, which a machine busy with other work disturbs far less (llama.cpp runs one
thread here): the plugin's is the pytest process's CPU time at all examples minus at one
example, divided by the difference. Target: plugin >= 0.9 of bare.

    .venv/bin/python bench/bench_embedded.py [--examples 24] [--rounds 3] [--memo PATH]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

import benchlib
from benchlib import Result, ratio, triage_project, warm_pass


def record(project: Path, memo: Path | None) -> list[dict[str, Any]]:
    """The chat bodies the plugin sends for ``project``'s prompt."""
    from servers.latency_server import serve

    with serve(0.0, memo=memo) as server:
        return warm_pass(server, project)


def plugin_run(project: Path, examples: int | None = None) -> tuple[float, float, int]:
    """The embedded backend: examples/s over the item's own seconds, pytest's CPU seconds, examples."""
    report = project / "report-embedded.json"
    limit = [f"--dspy-max-examples={examples}"] if examples else []
    args = ["-q", "--dspy-backend=embedded", "--dspy-no-cache", f"--dspy-json={report}", *limit]
    done = benchlib.pytest(args, project)
    prompt = benchlib.read_report(report)["prompts"][0]
    return prompt["n"] / prompt["seconds"], done.cpu, prompt["n"]


def bare_run(llm: Any, bodies: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """Bare ``create_chat_completion`` calls on the recorded requests: examples/s and CPU seconds per example."""
    from servers.latency_server import completion_kwargs

    started, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        llm.create_chat_completion(**completion_kwargs(body))
    return len(bodies) / (time.perf_counter() - started), (time.process_time() - cpu) / len(bodies)


def main() -> None:
    """Measure and report."""
    p = benchlib.parser(__doc__)
    p.add_argument("--examples", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--memo", type=Path, default=None, help="latency-server memo file to reuse across runs")
    args = p.parse_args()
    result = Result("embedded limit", "plugin embedded backend vs bare create_chat_completion, same requests",
                    ">= 0.9 of bare throughput")
    benchlib.sys_path_for_servers()
    from llama_cpp import Llama
    from servers.latency_server import gguf_path

    with benchlib.workdir("embedded") as tmp:
        project = triage_project(tmp, benchlib.tickets(args.examples))
        bodies = record(project, args.memo)
        llm = Llama(model_path=str(gguf_path()), n_ctx=8192, seed=0, verbose=False)  # the plugin's settings
        bare_run(llm, bodies[:1])  # first-call set-up, as the plugin's first example pays it too
        plugin, bare, plugin_cpu, bare_cpu = [], [], [], []
        for _ in range(args.rounds):
            _, one_cpu, _ = plugin_run(project, 1)
            rate, all_cpu, n = plugin_run(project)
            plugin.append(rate)
            plugin_cpu.append((all_cpu - one_cpu) / (n - 1))
            rate, cpu = bare_run(llm, bodies)
            bare.append(rate)
            bare_cpu.append(cpu)
        llm.close()
    result.figures.update(examples=len(bodies), plugin_examples_per_s=plugin, bare_examples_per_s=bare,
                          plugin_cpu_s_per_example=plugin_cpu, bare_cpu_s_per_example=bare_cpu)  # fmt: skip
    result.ratios["plugin/bare examples/s (wall, medians)"] = ratio(median(plugin), median(bare))
    result.ratios["plugin/bare throughput (CPU s per example, medians)"] = ratio(median(bare_cpu), median(plugin_cpu))
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
