"""Embedded limit: the plugin's embedded backend vs bare `llama_cpp.Llama.create_chat_completion`, same requests.

The chat requests the plugin makes for a generated triage prompt are recorded first (by
sending them through tests/servers/latency_server.py, which answers with the same GGUF).
Then, in alternating rounds: (a) pytest with ``--dspy-backend=embedded --dspy-no-cache``;
(b) in this process, the same GGUF loaded once with the plugin's settings (n_ctx 8192,
seed 0), and ``create_chat_completion`` on each recorded request's messages, JSON schema,
max_tokens, temperature and seed, from an empty KV cache each round. Three measures,
medians of the rounds: examples/s over the whole item (``seconds`` in the ``--dspy-json``
report; includes the per-item costs: model load, weights digest), marginal examples/s
(the item at all examples minus at one, so per-item costs cancel), and CPU seconds per
example (the pytest process's CPU time at all examples minus at one), which other work on
the machine disturbs less. Target: plugin >= 0.9 of bare.

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


def plugin_run(project: Path, examples: int | None = None) -> tuple[int, float, float]:
    """The embedded backend: examples, the item's own seconds, and pytest's CPU seconds."""
    report = project / "report-embedded.json"
    limit = [f"--dspy-max-examples={examples}"] if examples else []
    args = ["-q", "--dspy-backend=embedded", "--dspy-no-cache", f"--dspy-json={report}", *limit]
    done = benchlib.pytest(args, project)
    prompt = benchlib.read_report(report)["prompts"][0]
    return prompt["n"], prompt["seconds"], done.cpu


def bare_run(llm: Any, bodies: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """Bare ``create_chat_completion`` calls on the recorded requests: seconds and CPU seconds in all."""
    from servers.latency_server import completion_kwargs

    llm.reset()  # no prompt prefix left from the last round: the plugin's first example pays its prefill too
    started, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        llm.create_chat_completion(**completion_kwargs(body))
    return time.perf_counter() - started, time.process_time() - cpu


def rounds(project: Path, llm: Any, bodies: Sequence[dict[str, Any]], count: int) -> dict[str, list[float]]:
    """Alternating rounds of the plugin (at one example and at all) and the bare calls."""
    figures: dict[str, list[float]] = {key: [] for key in (
        "plugin_examples_per_s", "plugin_marginal_examples_per_s", "plugin_cpu_s_per_example",
        "bare_examples_per_s", "bare_cpu_s_per_example")}
    for _ in range(count):
        _, one_seconds, one_cpu = plugin_run(project, 1)
        n, seconds, cpu = plugin_run(project)
        bare_seconds, bare_cpu = bare_run(llm, bodies)
        figures["plugin_examples_per_s"].append(n / seconds)
        figures["plugin_marginal_examples_per_s"].append((n - 1) / (seconds - one_seconds))
        figures["plugin_cpu_s_per_example"].append((cpu - one_cpu) / (n - 1))
        figures["bare_examples_per_s"].append(len(bodies) / bare_seconds)
        figures["bare_cpu_s_per_example"].append(bare_cpu / len(bodies))
    return figures


def main() -> None:
    """Measure and report."""
    p = benchlib.server_parser(__doc__, examples=24)
    p.add_argument("--rounds", type=int, default=3)
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
        figures = rounds(project, llm, bodies, args.rounds)
        llm.close()
    result.figures.update(examples=len(bodies), **figures)
    bare = median(figures["bare_examples_per_s"])
    result.ratios["plugin/bare examples/s (wall, whole item)"] = ratio(median(figures["plugin_examples_per_s"]), bare)
    result.ratios["plugin/bare examples/s (wall, marginal)"] = ratio(
        median(figures["plugin_marginal_examples_per_s"]), bare)
    result.ratios["plugin/bare throughput (CPU s per example)"] = ratio(
        median(figures["bare_cpu_s_per_example"]), median(figures["plugin_cpu_s_per_example"]))
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
