"""The transfer check (``--dspy-target``) with two real models: the embedded SmolLM2-135M as task
model and Gemma 3 270M served on loopback by ``llama_cpp.server`` as the target.

One stand-in is used, and named: ``ScriptedTarget`` in the require_transfer test answers right
without few-shot demos and wrong with them. A candidate that wins on the task model and loses
significantly on a target is what that test needs, and no real model loses on cue.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.target_model import serve_target
from test_optimize import BOOTSTRAP, CODE_ROWS, OPTIMIZE, write_code_prompt

from pytest_dspy_local.core.results import CARRIES_OVER, INCONCLUSIVE, LOST, NOTHING_TO_CHECK, Transfer

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
VERDICTS = {CARRIES_OVER, INCONCLUSIVE, LOST, NOTHING_TO_CHECK}


@pytest.fixture(scope="module")
def target_url() -> Iterator[str]:
    """Base URL of Gemma 3 270M behind a real llama_cpp.server on 127.0.0.1."""
    with serve_target() as url:
        yield url


def _with_target(project: Path, url: str) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f'\n[tool.dspy_local.targets.gemma]\nbackend = "openai"\n'
                         f'model = "target"\nbase_url = "{url}"\n')


def _run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "prompts", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=1500, check=False)


def test_example_project_transfer_table_from_a_second_real_model(tmp_path: Path, target_url: str) -> None:
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__"))
    _with_target(project, target_url)
    # Eight rows per prompt keep the target's calls few: 4 held-out rows, each as written and optimized.
    args = ("--dspy-target=gemma", "--dspy-max-examples=8", "--dspy-json=r.json", "--dspy-report=r.html",
            "--dspy-audit=a.json")
    first = _run(project, *args)
    assert first.returncode == 0, first.stdout[-3000:]
    out = first.stdout
    assert "transfer (score as written -> optimized; p: one-sided paired test on the target):" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("prompt") and "p(loss)" in line)
    assert header.split() == ["prompt", "target", "rows", "task", "model", "on", "target", "p(gain)", "p(loss)",
                              "verdict"]
    report = json.loads((project / "r.json").read_text())
    transfers = {p["name"]: [Transfer.from_json(t) for t in p["transfer"]] for p in report["prompts"]}
    assert sorted(transfers) == ["order_id", "triage"]
    for name, (t,) in transfers.items():
        assert t.target == "gemma" and t.model is not None and t.model.model == "target"
        assert t.model.endpoint == target_url and t.model.backend == "openai"
        # Both snapshots record an optimization: the check runs on its held-out split of the 8 rows.
        assert t.heldout and t.rows == 4
        assert all(0.0 <= s <= 1.0 for s in (t.task_written, t.task_optimized, t.target_written, t.target_optimized))
        assert 0.0 <= t.p_gain <= 1.0 and 0.0 <= t.p_loss <= 1.0 and t.verdict in VERDICTS
        row = next(line for line in out.splitlines() if line.strip().startswith(f"{name} ") and "gemma" in line)
        assert f"{t.target_written:.3f} -> {t.target_optimized:.3f}" in row and t.verdict in row
    assert "Transfer to target models" in (project / "r.html").read_text()
    # The receipt lists the target's calls under its endpoint.
    receipt = json.loads((project / "a.json").read_text())
    host = target_url.split("//")[1].split("/")[0]
    assert any(host in json.dumps(item["endpoints"]) for item in receipt["items"])

    # Unchanged re-run: every answer, the target's included, comes from the cache.
    again = _run(project, *args)
    assert again.returncode == 0
    assert "(0 to the model," in again.stdout
    rerun = json.loads((project / "r.json").read_text())
    assert [p["transfer"] for p in rerun["prompts"]] == [p["transfer"] for p in report["prompts"]]


def test_unknown_target_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.dspy_local.targets.prod]\nmodel = "qwen2.5:7b"\nbackend = "ollama"\n'
                               'base_url = "http://127.0.0.1:11434"\n')
    result = pytester.runpytest("--dspy-target=staging")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --dspy-target=staging: no [[]tool.dspy_local.targets.staging[]] table in "
                                 "pyproject.toml (prod); add one with backend, model and base_url, or pass all"])


def test_target_on_another_host_must_be_in_allow_hosts(pytester: pytest.Pytester) -> None:
    table = '[tool.dspy_local.targets.prod]\nmodel = "m"\nbase_url = "http://gpu-box.lan:8000/v1"\n'
    pytester.makepyprojecttoml(table)
    result = pytester.runpytest("--dspy-target=all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --dspy-target=prod: its server gpu-box.lan is not an allowed host*add "
                                 "'gpu-box.lan' to [[]tool.dspy_local[]] allow_hosts*"])
    pytester.makepyprojecttoml('[tool.dspy_local]\nallow_hosts = ["gpu-box.lan"]\n' + table)
    assert pytester.runpytest("--dspy-target=all", "--collect-only").ret == pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.mark.parametrize(("table", "message"), [
    ('[tool.dspy_local.targets.prod]\nbackend = "openai"\n', "*[[]tool.dspy_local.targets.prod[]] needs a model*"),
    ('[tool.dspy_local.targets.prod]\nmodel = "m"\nurl = "x"\n',
     "*unknown key 'url' in [[]tool.dspy_local.targets.prod[]]; known keys: backend, base_url, model"),
    ('[tool.dspy_local]\ntargets = "prod"\n', "*[[]tool.dspy_local.targets[]] must hold one table per target model*"),
])
def test_bad_target_table_names_the_key(pytester: pytest.Pytester, table: str, message: str) -> None:
    pytester.makepyprojecttoml(table)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


SCRIPTED_TARGET = f'''
import json

from pytest_dspy_local.models.backends.base import ChatResult, ModelInfo

CODES = {dict(CODE_ROWS)!r}


class ScriptedTarget:
    """A stand-in target that answers right without few-shot demos and wrong with them."""

    def info(self):
        return ModelInfo("scripted", "scripted-target", "sha256:" + "0" * 64, "in-process")

    def chat(self, request):
        text = request.messages[-1]["content"]
        code = next(c for review, c in CODES.items() if review in text)
        demos = len(request.messages) > 2  # BootstrapFewShot's demos come as extra user/assistant turns
        return ChatResult(json.dumps({{"code": "WRONG" if demos else code}}))

    def close(self):
        pass


def pytest_dspy_local_make_backend(name, settings):
    return ScriptedTarget() if name == "scripted" else None
'''


@pytest.mark.parametrize("required", [False, True])
def test_candidate_that_loses_on_a_target_is_reported_and_held_back_when_required(
    pytester: pytest.Pytester, required: bool
) -> None:
    write_code_prompt(pytester)
    pytester.makeconftest(SCRIPTED_TARGET)
    # The demos win 1 of 5 held-out rows (p=0.5): a loose optimize_alpha lets that candidate be kept, so that
    # what happens on the target decides.
    pytester.makepyprojecttoml('[tool.dspy_local]\noptimize_alpha = 0.6\n\n'
                               '[tool.dspy_local.targets.fussy]\nbackend = "scripted"\nmodel = "scripted-target"\n')
    flags = ["--dspy-require-transfer"] if required else []
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP, "--dspy-target=fussy", *flags)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*TRANSFER LOSS: code: the optimized prompt gains +* on the task model but loses on "
                                 "target 'fussy': 1.000 -> 0.000 (5 held-out rows, p=0.0312 by McNemar exact*"])
    program = json.loads((pytester.path / "__prompt_snapshots__/prompt_code.program.json").read_text())
    demos = program["demos"]
    if required:
        result.stdout.fnmatch_lines(["*improved on the task model but lost on a target: kept the current program "
                                     "(require_transfer)*"])
        assert demos == []
    else:
        result.stdout.fnmatch_lines(["*improved: snapshot updated, although it lost on a target*"])
        assert demos
    baseline = json.loads((pytester.path / "__prompt_snapshots__/prompt_code.baseline.json").read_text())
    recorded = baseline["provenance"]["transfer"]["fussy"]
    assert recorded["digest"] == "sha256:" + "0" * 64 and recorded["rows"] == 5
