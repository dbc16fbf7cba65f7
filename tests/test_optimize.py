"""`--optimize`: snapshots written, kept, replaced, loaded and reported, on the real embedded model.

The prompt asks for a sentiment *code* with no hint of the convention ("POS"/"NEG"): the
model cannot guess it, and few-shot demos from BootstrapFewShot teach it, so optimizing
measurably improves the held-out score. BootstrapFewShot keeps these tests fast; MIPROv2
runs in test_optimize_mipro.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_dspy_local.models.backends.embedded import default_model_path, file_digest
from pytest_dspy_local.plugin.options import OPTIMIZE, OPTIMIZE_FORCE, OPTIMIZER, PROMPT_MODEL

CODE_MODULE = '''
import dspy


class Code(dspy.Signature):
    """Give the review's sentiment code."""

    review: str = dspy.InputField()
    code: str = dspy.OutputField()


program = dspy.Predict(Code)


def metric(example, prediction, trace=None):
    return example.code == prediction.code.strip()


threshold = 0.0
'''
CODE_ROWS = [
    ("I love it, works perfectly", "POS"), ("Broke after two days, terrible", "NEG"),
    ("Great value and fast shipping", "POS"), ("Awful customer service, never again", "NEG"),
    ("Exactly what I wanted, five stars", "POS"), ("Stopped working within a week", "NEG"),
    ("Comfortable and well made", "POS"), ("Cheap plastic, fell apart", "NEG"),
    ("My kids adore this toy", "POS"), ("Refund took a month, avoid", "NEG"),
]
BOOTSTRAP = f"{OPTIMIZER}=bootstrap"


def write_code_prompt(pytester: pytest.Pytester, name: str = "code") -> None:
    """The sentiment-code prompt module and its JSONL data."""
    pytester.makepyfile(**{f"prompt_{name}": CODE_MODULE})
    lines = [json.dumps({"review": review, "code": code}) for review, code in CODE_ROWS]
    (pytester.path / f"prompt_{name}.jsonl").write_text("\n".join(lines) + "\n")


def snapshot_bytes(pytester: pytest.Pytester) -> dict[str, bytes]:
    """Every file under every __prompt_snapshots__ directory."""
    return {str(p.relative_to(pytester.path)): p.read_bytes() for p in pytester.path.rglob("__prompt_snapshots__/*")}


@pytest.fixture
def optimized(pytester: pytest.Pytester) -> pytest.RunResult:
    """A first `--optimize` run of the code prompt."""
    write_code_prompt(pytester)
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    return result


def test_improvement_is_kept_as_json_and_rendered_prompt(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    optimized.stdout.fnmatch_lines([
        "dspy-local optimize code: bootstrap on 5 train examples; held-out score before: 0.000",
        "*optimized (bootstrap, 5 train / 5 held-out examples): held-out 0.000 -> 0.*; improved: snapshot updated",
        "snapshot written: *__prompt_snapshots__*prompt_code.baseline.json",
    ])
    files = snapshot_bytes(pytester)
    names = ("baseline.json", "program.json", "prompt.md")
    assert sorted(files) == [f"__prompt_snapshots__/prompt_code.{name}" for name in names]
    assert not list(pytester.path.rglob("*.pkl")), "never a pickle"
    program = json.loads(files["__prompt_snapshots__/prompt_code.program.json"])
    assert program["demos"], "the optimizer's few-shot demos are in the snapshot"
    prompt = files["__prompt_snapshots__/prompt_code.prompt.md"].decode()
    assert "### system" in prompt and "Give the review's sentiment code." in prompt
    baseline = json.loads(files["__prompt_snapshots__/prompt_code.baseline.json"])
    assert baseline["optimization"]["heldout_score_after"] > baseline["optimization"]["heldout_score_before"]
    assert baseline["model"]["digest"].startswith("sha256:") and baseline["data"]["origin"] == "prompt_code.jsonl"
    assert len(baseline["examples"]) == len(CODE_ROWS)


def test_plain_run_uses_the_snapshot(pytester: pytest.Pytester, optimized: pytest.RunResult) -> None:
    baseline = pytester.path / "__prompt_snapshots__/prompt_code.baseline.json"
    optimized_score = json.loads(baseline.read_text())["score"]
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*PASSED (score {optimized_score:.3f} >= 0.000, n=10)*",
                                 "model calls: 10 (0 to the model, 10 cached) in 1 item(s)"])


def test_second_optimize_with_warm_cache_changes_no_byte(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    before = snapshot_bytes(pytester)
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*no improvement: kept the current snapshot*"])
    assert snapshot_bytes(pytester) == before
    assert "snapshot written" not in result.stdout.str()


def test_force_replaces_the_snapshot_even_without_improvement(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    baseline = pytester.path / "__prompt_snapshots__/prompt_code.baseline.json"
    result = pytester.runpytest(OPTIMIZE_FORCE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*held-out * -> *; replaced the snapshot (--optimize=force)",
                                 "snapshot written: *prompt_code.baseline.json"])
    assert "--optimize=force" in json.loads(baseline.read_text())["optimization"]["decision"]


def test_mismatched_snapshot_asks_to_reoptimize(pytester: pytest.Pytester, optimized: pytest.RunResult) -> None:
    module = pytester.path / "prompt_code.py"
    module.write_text(module.read_text().replace("code: str = dspy.OutputField()", "label: str = dspy.OutputField()")
                      .replace("prediction.code", "prediction.label"))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*prompt_code.program.json: the snapshot was made for a program of another shape*"
                                 "re-run `pytest --optimize`"])


def test_unused_snapshots_are_reported_fail_strict_runs_and_are_deleted_on_rerecording(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    (pytester.path / "prompt_code.py").rename(pytester.path / "prompt_renamed.py")
    (pytester.path / "prompt_code.jsonl").rename(pytester.path / "prompt_renamed.jsonl")
    old = sorted((pytester.path / "__prompt_snapshots__").glob("prompt_code.*"))
    assert len(old) == 3
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK  # not strict: listed, not failed
    result.stdout.fnmatch_lines(["3 snapshot file(s) unused (their prompt module is gone); delete them, or run "
                                 "`pytest --dspy-update-baseline`, which does:",
                                 "  *__prompt_snapshots__/prompt_code.baseline.json"])

    strict = pytester.runpytest("--dspy-strict-snapshots")
    # The renamed prompt has no baseline: under strict snapshots it fails, and so does the run.
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*no baseline, and strict snapshots are on: record one with "
                                 "`pytest prompt_renamed.py --dspy-update-baseline`*",
                                 "*3 snapshot file(s) unused*strict snapshots are on, so the run fails*"])

    recorded = pytester.runpytest("--dspy-update-baseline")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(["snapshot deleted (its prompt module is gone): *prompt_code.baseline.json"])
    assert not any(p.exists() for p in old)
    clean = pytester.runpytest("--dspy-strict-snapshots")
    assert clean.ret == pytest.ExitCode.OK
    assert "snapshot file(s) unused" not in clean.stdout.str()


def test_k_selects_what_is_optimized(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester, "code")
    write_code_prompt(pytester, "other")
    pytester.runpytest(OPTIMIZE, BOOTSTRAP, "-k", "other").assert_outcomes(passed=1)
    assert sorted(p.name for p in (pytester.path / "__prompt_snapshots__").iterdir()) == [
        "prompt_other.baseline.json", "prompt_other.program.json", "prompt_other.prompt.md"]


def test_under_xdist_each_prompt_is_optimized_once_and_written_by_the_controller(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester, "code")
    write_code_prompt(pytester, "other")
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP, "-n", "2")
    result.assert_outcomes(passed=2)
    assert len(list((pytester.path / "__prompt_snapshots__").iterdir())) == 6
    result.stdout.fnmatch_lines(["code: *", "  optimized (bootstrap*", "other: *", "  optimized (bootstrap*"])
    assert result.stdout.str().count("snapshot written:") == 6


BLOCK_OPTUNA = '''
import importlib.abc
import sys


class NoOptuna(importlib.abc.MetaPathFinder):
    """Stand-in for an environment without optuna (no real part removes a package on demand)."""

    def find_spec(self, name, path=None, target=None):
        if name == "optuna" or name.startswith("optuna."):
            raise ModuleNotFoundError("No module named 'optuna'")
        return None


sys.modules.pop("optuna", None)
sys.meta_path.insert(0, NoOptuna())
'''


@pytest.mark.fresh_cache
def test_missing_optuna_is_reported_before_any_model_call(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    pytester.makeconftest(BLOCK_OPTUNA)
    result = pytester.runpytest_subprocess(OPTIMIZE)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dspy-optimizer=mipro needs optuna, which is not installed: pip install*"])
    assert not (pytester.path / ".dspy_cache").exists(), "no model was called"


def test_bad_optimizer_knob_stops_the_run_naming_it(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    pytester.makepyprojecttoml("[tool.dspy_local.optimizers.bootstrap]\nmax_demoz = 2\n")
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*[[]tool.dspy_local.optimizers.bootstrap[]] max_demoz: not a setting of BootstrapFewShot*"]
    )


def test_killed_optimize_leaves_snapshots_intact(pytester: pytest.Pytester, optimized: pytest.RunResult) -> None:
    before = snapshot_bytes(pytester)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", OPTIMIZE_FORCE, BOOTSTRAP, "--dspy-no-cache", "-s"],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "held-out score before" in line or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert snapshot_bytes(pytester) == before
    assert not [p for p in (pytester.path / "__prompt_snapshots__").iterdir() if p.name.endswith(".tmp")]


LOAD_AND_CALL = '''
import sys
from pytest_dspy_local import load_program, local_lm
import dspy

program = load_program(sys.argv[1])
dspy.configure(lm=local_lm(), adapter=dspy.JSONAdapter())
print("demos:", len(program.demos))
print("answer:", program(review="Absolutely wonderful").code)
'''


def test_load_program_in_a_plain_python_process(pytester: pytest.Pytester, optimized: pytest.RunResult) -> None:
    script = pytester.path / "use.py"
    script.write_text(LOAD_AND_CALL)
    done = subprocess.run([sys.executable, str(script), str(pytester.path / "prompt_code.py")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    demos = len(json.loads((pytester.path / "__prompt_snapshots__/prompt_code.program.json").read_text())["demos"])
    assert f"demos: {demos}" in done.stdout
    answer = done.stdout.split("answer:", 1)[1].strip()
    assert answer, "the loaded program answered"


def test_syrupy_snapshot_update_leaves_prompt_snapshots_alone(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    before = snapshot_bytes(pytester)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    assert snapshot_bytes(pytester) == before


MIPRO_CHEAP = """[tool.dspy_local.optimizers.mipro]
auto = "light"
program_aware_proposer = false
data_aware_proposer = false
"""


def test_mipro_runs_on_the_embedded_model_with_progress(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    pytester.makepyprojecttoml(MIPRO_CHEAP)
    result = pytester.runpytest(OPTIMIZE)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "dspy-local optimize code: mipro on 5 train examples; held-out score before: 0.000",
        "dspy-local optimize code: step 1: bootstrap fewshot examples (*model calls, * cached)",
        "dspy-local optimize code: trial 1/*, best so far *",
        "dspy-local optimize code: optimized (mipro, 5 train / 5 held-out examples): held-out 0.000 -> *",
    ])
    baseline = json.loads((pytester.path / "__prompt_snapshots__/prompt_code.baseline.json").read_text())
    assert baseline["optimization"]["settings"] == {"auto": "light", "data_aware_proposer": False,
                                                    "program_aware_proposer": False}


def test_gepa_runs_on_the_embedded_model_with_its_budget_knob(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    pytester.makepyprojecttoml("[tool.dspy_local.optimizers.gepa]\nmax_metric_calls = 30\n")
    result = pytester.runpytest(OPTIMIZE, f"{OPTIMIZER}=gepa")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dspy-local optimize code: iteration 1, best so far *",
                                 "dspy-local optimize code: optimized (gepa, 5 train / 5 held-out examples): *"])
    baseline = json.loads((pytester.path / "__prompt_snapshots__/prompt_code.baseline.json").read_text())
    assert baseline["optimization"]["settings"] == {"max_metric_calls": 30}


@pytest.mark.fresh_cache
def test_a_separate_proposal_model_is_one_setting_away(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    pytester.makepyprojecttoml(MIPRO_CHEAP)
    # A second real model: the same weights plus one byte, so a different digest and engine.
    proposer = pytester.path / "proposer.gguf"
    shutil.copyfile(default_model_path(), proposer)
    with proposer.open("ab") as handle:
        handle.write(b"\0")
    result = pytester.runpytest(OPTIMIZE, f"{PROMPT_MODEL}=gguf:{proposer}")
    result.assert_outcomes(passed=1)
    optimization = json.loads((pytester.path / "__prompt_snapshots__/prompt_code.baseline.json").read_text())[
        "optimization"]
    assert optimization["prompt_model"]["digest"] == file_digest(proposer)
    assert optimization["prompt_model"]["digest"] != file_digest(default_model_path())


def test_program_file_from_another_write_is_reported_as_an_incomplete_snapshot(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    # What a run killed between the snapshot's renames leaves: a program file the baseline was not recorded with.
    program = pytester.path / "__prompt_snapshots__/prompt_code.program.json"
    state = json.loads(program.read_text())
    state["demos"] = state["demos"][:1]
    program.write_text(json.dumps(state, indent=2) + "\n")
    result = pytester.runpytest(BOOTSTRAP)
    result.stdout.fnmatch_lines(["*snapshot stale (snapshot incomplete: prompt_code.program.json is not the program "
                                 "prompt_code.baseline.json was recorded with (an interrupted --optimize?)); "
                                 "`pytest --optimize=stale` re-optimizes it"])


def test_temp_files_of_a_killed_write_are_removed_by_the_next(tmp_path: Path) -> None:
    from pytest_dspy_local.core.files import STALE_TEMP_SECONDS, write_atomically

    target = tmp_path / "prompt_code.baseline.json"
    old, fresh = tmp_path / ".prompt_code.baseline.json.ab12cd.tmp", tmp_path / ".prompt_code.baseline.json.ef34.tmp"
    old.write_text("{")
    fresh.write_text("{")  # another run may be writing this one right now
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    write_atomically({target: b"{}\n"})
    assert target.read_bytes() == b"{}\n"
    assert not old.exists() and fresh.exists()
