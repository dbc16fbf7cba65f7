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
from pytest_dspy_local.plugin.options import OPTIMIZE, OPTIMIZE_BUDGET, OPTIMIZE_FORCE, OPTIMIZER, PROMPT_MODEL

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
    """A first `--optimize=force` run of the code prompt: a snapshot with the optimizer's demos."""
    write_code_prompt(pytester)
    result = pytester.runpytest(OPTIMIZE_FORCE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    return result


# On 5 held-out rows the demos win one row (0.000 -> 0.200): McNemar's one-sided p is 0.5. A loose
# optimize_alpha makes that gain "significant", to see what an accepted snapshot records.
LOOSE_ALPHA = "[tool.dspy_local]\noptimize_alpha = 0.6\n"


def test_significant_gain_is_kept_with_the_test_and_a_review_of_what_changed(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    pytester.makepyprojecttoml(LOOSE_ALPHA)
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "dspy-local optimize code: projected at most 15 model calls: 5 task + 0 proposal (5 train rows x 1 round(s)),"
        " + 10 for the held-out evaluations",
        "dspy-local optimize code: bootstrap on 5 train examples; held-out score before: 0.000; *",
        "*optimized (bootstrap, 5 train / 5 held-out examples): held-out 0.000 -> 0.200 (+0.200, 95% CI [[]+0.00, "
        "+0.60[]]) on 5 rows, p=0.5 by McNemar exact (one-sided): improved: snapshot updated",
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
    # The reviewer's table: the held-out row won, with input, expected, old and new answers; the demos added.
    assert "## What changed on the held-out rows" in prompt
    assert "### Won: the new program scores higher (1)" in prompt
    assert "### Lost: the new program scores lower (0)" in prompt
    won_row = next(line for line in prompt.splitlines() if line.startswith("| prompt_code.jsonl"))
    cells = [c.strip() for c in won_row.strip("|").split("|")]
    assert cells[1].startswith("review=") and cells[2] in ("code='POS'", "code='NEG'")
    assert cells[3] != cells[4] and cells[4] == cells[2], "old answer wrong, new answer right"
    assert f"### Demos added ({len(program['demos'])})" in prompt
    baseline = json.loads(files["__prompt_snapshots__/prompt_code.baseline.json"])
    optimization = baseline["optimization"]
    assert optimization["heldout_score_after"] > optimization["heldout_score_before"]
    assert optimization["test"] == "McNemar exact (one-sided)" and optimization["p_value"] == 0.5
    assert optimization["significant"] and optimization["alpha"] == 0.6 and len(optimization["heldout_won"]) == 1
    assert optimization["ci"] == [0.0, 0.6]
    assert baseline["model"]["digest"].startswith("sha256:") and baseline["data"]["origin"] == "prompt_code.jsonl"
    assert len(baseline["examples"]) == len(CODE_ROWS)


def test_a_winner_that_is_not_significant_changes_no_byte_and_force_keeps_it(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    first = pytester.runpytest(OPTIMIZE, BOOTSTRAP)  # no snapshot yet: the program as written is recorded
    first.stdout.fnmatch_lines(["*p=0.5 by McNemar exact (one-sided): not significant, kept the program as written*"])
    before = snapshot_bytes(pytester)
    assert json.loads(before["__prompt_snapshots__/prompt_code.program.json"])["demos"] == []
    assert "## What changed" not in before["__prompt_snapshots__/prompt_code.prompt.md"].decode()
    again = pytester.runpytest(OPTIMIZE, BOOTSTRAP)
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines([
        "dspy-local optimize code: optimized (bootstrap, 5 train / 5 held-out examples): held-out 0.000 -> 0.200 "
        "(+0.200, 95% CI [[]+0.00, +0.60[]]) on 5 rows, p=0.5 by McNemar exact (one-sided): not significant, "
        "kept the current program (need about * held-out rows to detect +0.20; add rows or use --optimize=force)",
    ])
    assert snapshot_bytes(pytester) == before, "the snapshot files are unchanged byte for byte"
    assert "snapshot written" not in again.stdout.str()
    forced = pytester.runpytest(OPTIMIZE_FORCE, BOOTSTRAP)
    forced.stdout.fnmatch_lines(["*p=0.5 by McNemar exact (one-sided): replaced the snapshot (--optimize=force)"])
    assert json.loads((pytester.path / "__prompt_snapshots__/prompt_code.program.json").read_text())["demos"]


def test_a_held_out_split_too_small_is_reported_before_the_optimizer_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(prompt_code=CODE_MODULE)
    rows = CODE_ROWS[:8]  # 4 held-out rows: McNemar at 0.05 needs 5 rows to improve
    (pytester.path / "prompt_code.jsonl").write_text("".join(json.dumps({"review": r, "code": c}) + "\n"
                                                             for r, c in rows))
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "dspy-local optimize code: not optimized (bootstrap, 4 train / 4 held-out examples): held-out 0.000; "
        "held-out split too small for a significant gain: 4 held-out rows, 4 of them wrong now, and McNemar exact "
        "at optimize_alpha 0.05 needs at least 5 rows to improve (with none lost); at this error rate that takes "
        "about 5 held-out rows, 10 rows of data at train_fraction 0.5; kept the program as written "
        "(add rows, or use --optimize=force)",
    ])
    assert "demos" not in result.stdout.str() and "trial" not in result.stdout.str()
    forced = pytester.runpytest(OPTIMIZE_FORCE, BOOTSTRAP)
    forced.stdout.fnmatch_lines(["dspy-local optimize code: warning: held-out split too small for a significant "
                                 "gain: *; optimizing anyway (--optimize=force)",
                                 "*replaced the snapshot (--optimize=force)"])


def test_plain_run_uses_the_snapshot(pytester: pytest.Pytester, optimized: pytest.RunResult) -> None:
    baseline = pytester.path / "__prompt_snapshots__/prompt_code.baseline.json"
    optimized_score = json.loads(baseline.read_text())["score"]
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*PASSED (score {optimized_score:.3f} >= 0.000, n=10)*",
                                 "model calls: 10 (0 to the model, 10 cached) in 1 item(s)"])


def test_second_optimize_changes_no_byte(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    before = snapshot_bytes(pytester)
    result = pytester.runpytest(OPTIMIZE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    # The forced snapshot gets 4 of the 5 held-out rows wrong: too few for McNemar to find a gain at 0.05,
    # so the optimizer is not run at all.
    result.stdout.fnmatch_lines(["*not optimized (bootstrap, 5 train / 5 held-out examples): held-out 0.200; held-out "
                                 "split too small for a significant gain: 5 held-out rows, 4 of them wrong now, *; "
                                 "kept the current program (add rows, or use --optimize=force)"])
    assert snapshot_bytes(pytester) == before
    assert "snapshot written" not in result.stdout.str()


def test_force_replaces_the_snapshot_even_without_improvement(
    pytester: pytest.Pytester, optimized: pytest.RunResult
) -> None:
    baseline = pytester.path / "__prompt_snapshots__/prompt_code.baseline.json"
    result = pytester.runpytest(OPTIMIZE_FORCE, BOOTSTRAP)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*held-out * -> * on 5 rows, p=* by McNemar exact (one-sided): replaced the snapshot "
                                 "(--optimize=force)",
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
        # MIPROv2 light on 5 train rows: 4 validation rows, 1 to bootstrap from; 10 trials; 3 proposals.
        "dspy-local optimize code: projected at most 61 model calls: 48 task + 3 proposal (bootstrap <= 4, 10 trials "
        "x 4 + 1 full evaluation(s) x 4), + 10 for the held-out evaluations",
        "dspy-local optimize code: mipro on 5 train examples; held-out score before: 0.000; *",
        "dspy-local optimize code: step 1: bootstrap fewshot examples (0 of ~51 projected model calls*)",
        "dspy-local optimize code: full evaluation of the current program (* of ~51 projected model calls*)",
        "dspy-local optimize code: trial 1/10, best so far *",
        "dspy-local optimize code: trial 10/10, best so far *",
        "dspy-local optimize code: optimized (mipro, 5 train / 5 held-out examples): held-out 0.000 -> *",
    ])
    out = result.stdout.str()
    assert "trial 11/" not in out, "the trial counter never exceeds its total"
    used = int(out.split("trial 10/10")[1].split("(")[1].split(" of")[0])
    assert 40 <= used <= 51, "the projection bounds the calls made"
    baseline = json.loads((pytester.path / "__prompt_snapshots__/prompt_code.baseline.json").read_text())
    assert baseline["optimization"]["settings"] == {"auto": "light", "data_aware_proposer": False,
                                                    "program_aware_proposer": False}


def test_budget_stops_mipro_between_trials_and_tests_its_best_so_far(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    pytester.makepyprojecttoml(MIPRO_CHEAP)
    result = pytester.runpytest(OPTIMIZE, f"{OPTIMIZE_BUDGET}=24")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "dspy-local optimize code: projected at most 61 model calls: *; budget 24 model calls",
        "dspy-local optimize code: budget reached (24 model calls) after * model calls: testing the best candidate "
        "so far",
        "dspy-local optimize code: optimized (mipro, 5 train / 5 held-out examples; budget reached: 24 model calls): "
        "held-out 0.000 -> * on 5 rows, p=* by McNemar exact (one-sided): *",
    ])
    out = result.stdout.str()
    used = int(out.split("budget reached (24 model calls) after ")[1].split(" ")[0])
    # Bootstrapping (4), 3 proposals and the default program's full evaluation (4) leave room for 3 trials of 4 rows.
    assert 20 <= used <= 24, used
    assert "trial 4/10" not in out
    baseline = json.loads((pytester.path / "__prompt_snapshots__/prompt_code.baseline.json").read_text())
    assert baseline["optimization"]["budget_reached"] and baseline["optimization"]["budget"] == "24 model calls"


def test_budget_caps_bootstrap_train_rows(pytester: pytest.Pytester) -> None:
    write_code_prompt(pytester)
    result = pytester.runpytest(OPTIMIZE_FORCE, BOOTSTRAP, f"{OPTIMIZE_BUDGET}=3")
    result.stdout.fnmatch_lines([
        "dspy-local optimize code: projected at most 13 model calls: 3 task + 0 proposal (3 train rows x 1 round(s)), "
        "+ 10 for the held-out evaluations; budget 3 model calls",
        "dspy-local optimize code: bootstrap on 3 train examples; *",
        "dspy-local optimize code: budget reached (3 model calls) after * model calls*",
    ])


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


# Unit tests: the projection's arithmetic and the acceptance decision, without a pytest run.


def test_projection_of_mipro_light_follows_dspy_settings() -> None:
    from pytest_dspy_local.core.projection import project

    # 12 train rows: MIPROv2 validates on int(12 * 0.8) = 9 and bootstraps from 3; light: 6 candidates,
    # 3 instructions, 10 trials (2 * 2 variables * log2(6)); no minibatches at 9 validation rows.
    p = project("mipro", {}, predictors=1, train=12, heldout=13)
    assert (p.trials, p.trial_calls) == (10, 9)
    assert p.task_calls == 4 * 3 + 10 * 9 + 9  # 4 bootstrapped demo sets x 3 rows, trials, default program
    assert p.prompt_calls == 3 + 2 + 2  # instructions, program-aware (predictors + 1), data summary (1 batch + 1)
    assert p.heldout_calls == 26 and p.total == p.task_calls + p.prompt_calls + 26
    # 100 train rows: 80 validation rows, so minibatches of 35 and full evaluations every 5 trials.
    big = project("mipro", {"data_aware_proposer": False, "program_aware_proposer": False}, 1, 100, 10)
    assert big.trial_calls == 35 and big.task_calls == 4 * 20 + 10 * 35 + (1 + 2) * 80
    # Zero-shot MIPROv2: no demos to bootstrap, 6 instructions, trials from 1 variable.
    zero = project("mipro", {"max_bootstrapped_demos": 0, "max_labeled_demos": 0}, 1, 12, 13)
    assert zero.trials == 9 and zero.task_calls == 9 * 9 + 9 and zero.prompt_calls == 6 + 2 + 2


def test_projection_of_bootstrap_and_gepa() -> None:
    from pytest_dspy_local.core.projection import project

    assert project("bootstrap", {"max_rounds": 2}, 2, 10, 5).task_calls == 10 * 2 * 2
    assert project("gepa", {"max_metric_calls": 30}, 1, 5, 5).task_calls == 30
    assert project("gepa", {"max_full_evals": 3}, 1, 5, 5).task_calls == 15
    import dspy

    for predictors, train in ((1, 10), (2, 40), (1, 3)):
        # Against DSPy's own arithmetic (an instance method that reads nothing from the instance).
        dspy_budget = dspy.GEPA.auto_budget(None, predictors, 6, train)  # type: ignore[arg-type]
        assert project("gepa", {}, predictors, train, 5).task_calls == dspy_budget * predictors


def test_budget_parsing() -> None:
    from pytest_dspy_local.core.settings import Budget, resolve
    from pytest_dspy_local.errors import UsageError

    assert resolve({"optimize_budget": "40"}, {}, None)[0].optimize_budget == Budget(calls=40)
    assert resolve({"optimize_budget": "10m"}, {}, None)[0].optimize_budget == Budget(seconds=600.0)
    assert resolve({}, {"DSPY_LOCAL_OPTIMIZE_BUDGET": "90s"}, None)[0].optimize_budget == Budget(seconds=90.0)
    with pytest.raises(UsageError, match="--optimize-budget must be a number of model calls"):
        resolve({"optimize_budget": "lots"}, {}, None)


def test_acceptance_decision() -> None:
    from pytest_dspy_local.core.acceptance import decide, min_discordant, power_problem

    assert [min_discordant(a) for a in (0.05, 0.01, 0.1, 0.125)] == [5, 7, 4, 4]
    # One row won of 12: the order_id case; not significant.
    one = decide([1.0] * 6 + [0.0] * 6, [1.0] * 7 + [0.0] * 5, alpha=0.05, min_gain=0.0, seed=0)
    assert one.test == "McNemar exact (one-sided)" and one.p_value == 0.5 and not one.significant
    assert (one.won, one.lost) == (1, 0) and one.rows_needed is not None and one.rows_needed > 12
    # Five won, none lost: p = 1/32 < 0.05.
    five = decide([0.0] * 10, [1.0] * 5 + [0.0] * 5, alpha=0.05, min_gain=0.0, seed=0)
    assert five.significant and five.p_value == 0.03125 and five.ci[0] > 0
    assert not decide([0.0] * 10, [1.0] * 5 + [0.0] * 5, alpha=0.05, min_gain=0.5, seed=0).significant
    # Continuous scores: the paired bootstrap in the gain direction.
    cont = decide([0.2, 0.4, 0.3, 0.5] * 5, [0.6, 0.7, 0.6, 0.9] * 5, alpha=0.05, min_gain=0.0, seed=0)
    assert cont.test == "paired bootstrap (one-sided)" and cont.significant
    assert decide([0.5] * 4, [0.4] * 4, alpha=0.05, min_gain=0.0, seed=0).p_value == 1.0
    assert power_problem([0.0] * 4, alpha=0.05, min_gain=0.0, train_fraction=0.5) is not None
    assert power_problem([0.0] * 5, alpha=0.05, min_gain=0.0, train_fraction=0.5) is None
    assert "nothing to gain" in (power_problem([1.0] * 20, alpha=0.05, min_gain=0.0, train_fraction=0.5) or "")
    assert power_problem([0.3, 0.9], alpha=0.05, min_gain=0.0, train_fraction=0.5) is None  # not 0/1: bootstrap
