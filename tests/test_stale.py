"""`--optimize=stale`: provenance recorded with each snapshot, stale ones re-optimized and listed.

The comparisons are unit-tested without a pytest run; the round trips run the real embedded
model with BootstrapFewShot on two small prompts (test_optimize.py's sentiment-code task).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import dspy
import pytest
from test_optimize import CODE_ROWS, snapshot_bytes, write_code_prompt

from pytest_dspy_local.core.provenance import (
    NO_SNAPSHOT,
    NOT_IDENTIFIED,
    OLDER_SNAPSHOT,
    Provenance,
    data_change,
    program_sha256,
    source_sha256,
    staleness,
    version_changes,
)
from pytest_dspy_local.plugin.options import JSON_REPORT, OPTIMIZE, OPTIMIZE_STALE, UPDATE_BASELINE
from pytest_dspy_local.report.terminal import staleness_note

RECORDED = Provenance(
    data_sha256="d" * 64, task_model="sha256:" + "a" * 64, proposal_model=None, optimizer="bootstrap",
    knobs={"max_rounds": 1}, seed=0, module_sha256="m" * 64, program_sha256="p" * 64, rows=("r1", "r2", "r3"),
    run_settings={"train_fraction": 0.5, "max_examples": None, "temperature": 0.0, "max_tokens": 256},
    versions={"dspy": "3.4.1", "pytest-dspy-local": "0.1.0"},
)


def now(**changes: Any) -> Provenance:
    """The recorded provenance with ``changes``: what a later run finds."""
    return dataclasses.replace(RECORDED, **changes)


def test_same_provenance_is_fresh_and_none_is_no_snapshot() -> None:
    assert staleness(RECORDED, now()) == []
    assert staleness(None, now()) == [NO_SNAPSHOT]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"module_sha256": "n" * 64}, "module source changed"),
    ({"program_sha256": "q" * 64}, "program changed"),
    ({"task_model": "sha256:" + "b" * 64}, "model digest changed: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb"),
    ({"proposal_model": "sha256:" + "c" * 64}, "proposal model changed: the task model -> another"),
    ({"optimizer": "mipro", "knobs": {}}, "optimizer changed: bootstrap -> mipro"),
    ({"knobs": {"max_rounds": 2, "max_labeled_demos": 4}}, "optimizer settings changed: max_labeled_demos, max_rounds"),
    ({"seed": 7}, "seed changed: 0 -> 7"),
    ({"run_settings": {**(RECORDED.run_settings or {}), "max_tokens": 64}}, "settings changed: max_tokens 256 -> 64"),
])
def test_each_change_is_named(changes: dict[str, Any], reason: str) -> None:
    assert staleness(RECORDED, now(**changes)) == [reason]


@pytest.mark.parametrize(("rows", "reason"), [
    (("r1", "r2", "r3", "r4"), "data changed: 1 row added"),
    (("r1", "r2", "r4", "r5", "r6"), "data changed: 3 rows added, 1 removed"),
    (("r1",), "data changed: 2 rows removed"),
    (("r3", "r2", "r1"), "data changed: same inputs, expected outputs or order edited"),
])
def test_data_changes_are_counted_by_row(rows: tuple[str, ...], reason: str) -> None:
    assert staleness(RECORDED, now(data_sha256="e" * 64, rows=rows)) == [reason]
    assert data_change(None, rows) == "data changed"


def test_versions_are_reported_but_not_stale() -> None:
    bumped = now(versions={"dspy": "3.4.2", "pytest-dspy-local": "0.1.0"})
    assert staleness(RECORDED, bumped) == []
    assert version_changes(RECORDED, bumped) == ["dspy 3.4.1 -> 3.4.2"]


def test_proposal_digest_is_compared_only_when_identified() -> None:
    recorded = now(proposal_model="sha256:" + "c" * 64)
    assert staleness(recorded, now(proposal_model=NOT_IDENTIFIED)) == []  # a plain run does not ask the proposer
    assert staleness(recorded, now(proposal_model="sha256:" + "f" * 64)) == [
        "proposal model digest changed: sha256:cccccccccccc -> sha256:ffffffffffff"]
    assert staleness(recorded, now()) == ["proposal model changed: another -> the task model"]


def test_json_round_trip_and_older_baselines() -> None:
    assert Provenance.from_json(json.loads(json.dumps(RECORDED.to_json()))) == RECORDED
    assert Provenance.from_baseline({"provenance": RECORDED.to_json()}) == RECORDED
    older = {"data": {"sha256": "d" * 64}, "model": {"digest": "sha256:" + "a" * 64},
             "optimization": {"optimizer": "bootstrap", "settings": {"max_rounds": 1}, "seed": 0, "prompt_model": None},
             "versions": {"dspy": "3.4.1"}}
    assert staleness(Provenance.from_baseline(older), now()) == [OLDER_SNAPSHOT]
    assert staleness(Provenance.from_baseline(older), now(data_sha256="e" * 64)) == [OLDER_SNAPSHOT, "data changed"]


class Triage(dspy.Signature):
    """Route a support ticket to the team that handles it."""

    ticket: str = dspy.InputField()
    team: Literal["billing", "tech", "account"] = dspy.OutputField()


def test_program_hash_covers_instructions_field_types_and_demos() -> None:
    written = program_sha256(dspy.Predict(Triage))
    assert program_sha256(dspy.Predict(Triage)) == written
    assert program_sha256(dspy.Predict(Triage.with_instructions("Route it."))) != written

    class Other(Triage):
        """Route a support ticket to the team that handles it."""

        team: Literal["billing", "tech"] = dspy.OutputField()

    assert program_sha256(dspy.Predict(Other)) != written
    with_demo = dspy.Predict(Triage)
    with_demo.demos = [dspy.Example(ticket="refund please", team="billing")]
    assert program_sha256(with_demo) != written


def test_module_hash_ignores_line_endings(tmp_path: Path) -> None:
    (tmp_path / "lf.py").write_bytes(b"import dspy\nprogram = 1\n")
    (tmp_path / "crlf.py").write_bytes(b"import dspy\r\nprogram = 1\r\n")
    (tmp_path / "edited.py").write_bytes(b"import dspy\nprogram = 2\n")
    assert source_sha256(tmp_path / "lf.py") == source_sha256(tmp_path / "crlf.py")
    assert source_sha256(tmp_path / "lf.py") != source_sha256(tmp_path / "edited.py")


@pytest.mark.parametrize(("reasons", "optimize", "note"), [
    ([], "stale", "fresh: not re-optimized"),
    ([NO_SNAPSHOT], "stale", "no snapshot: optimized"),
    (["data changed: 1 row added"], "stale", "stale (data changed: 1 row added): optimized"),
    (["data changed: 1 row added"], "better", "stale (data changed: 1 row added): optimized"),
    (["seed changed: 0 -> 1"], None,
     "snapshot stale (seed changed: 0 -> 1); `pytest --optimize=stale` re-optimizes it"),
    ([], None, None),
    ([NO_SNAPSHOT], None, None),
    ([], "better", None),
])
def test_staleness_notes(reasons: list[str], optimize: str | None, note: str | None) -> None:
    assert staleness_note(reasons, optimize) == note


# Round trips on the embedded model. The optimizer is set in pyproject.toml so plain runs
# compare against the optimizer that made the snapshots.
BOOTSTRAP_PROJECT = '[tool.dspy_local]\noptimizer = "bootstrap"\n'
NEW_ROW = {"review": "Arrived broken and support ignored me", "code": "NEG"}


def add_row(pytester: pytest.Pytester, name: str) -> None:
    """Append one example to ``prompt_<name>.jsonl``."""
    with (pytester.path / f"prompt_{name}.jsonl").open("a") as handle:
        handle.write(json.dumps(NEW_ROW) + "\n")


def baseline_of(pytester: pytest.Pytester, name: str) -> dict[str, Any]:
    """``prompt_<name>.baseline.json``."""
    baseline = pytester.path / f"__prompt_snapshots__/prompt_{name}.baseline.json"
    value: dict[str, Any] = json.loads(baseline.read_text())
    return value


@pytest.fixture
def optimized_two(pytester: pytest.Pytester) -> pytest.RunResult:
    """Two prompts, `--optimize`d once with BootstrapFewShot."""
    write_code_prompt(pytester, "code")
    write_code_prompt(pytester, "other")
    pytester.makepyprojecttoml(BOOTSTRAP_PROJECT)
    result = pytester.runpytest(OPTIMIZE)
    result.assert_outcomes(passed=2)
    return result


def test_optimize_records_provenance(pytester: pytest.Pytester, optimized_two: pytest.RunResult) -> None:
    baseline = baseline_of(pytester, "code")
    provenance = baseline["provenance"]
    assert provenance["data_sha256"] == baseline["data"]["sha256"]
    assert provenance["task_model"] == baseline["model"]["digest"]
    assert len(provenance["rows"]) == len(CODE_ROWS) and provenance["optimizer"] == "bootstrap"
    assert provenance["module_sha256"] and provenance["program_sha256"] and provenance["proposal_model"] is None
    assert set(baseline) >= {"prompt", "shape", "score", "examples", "model", "data", "optimization", "history"}


def test_nothing_stale_means_no_optimizer_and_no_model_call(
    pytester: pytest.Pytester, optimized_two: pytest.RunResult
) -> None:
    before = snapshot_bytes(pytester)
    result = pytester.runpytest(OPTIMIZE_STALE)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["code: *", "  fresh: not re-optimized", "other: *", "  fresh: not re-optimized",
                                 "model calls: 20 (0 to the model, 20 cached) in 2 item(s)"])
    out = result.stdout.str()
    assert "dspy-local optimize" not in out and "optimized (bootstrap" not in out and "snapshot written" not in out
    assert snapshot_bytes(pytester) == before


def test_a_data_change_reoptimizes_only_that_prompt(pytester: pytest.Pytester, optimized_two: pytest.RunResult) -> None:
    code_before = {k: v for k, v in snapshot_bytes(pytester).items() if "prompt_code." in k}
    add_row(pytester, "other")
    result = pytester.runpytest(OPTIMIZE_STALE, "-rA")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "dspy-local optimize other: bootstrap on * train examples*",
        "code: *", "  fresh: not re-optimized",
        "other: *", "  stale (data changed: 1 row added): optimized", "  optimized (bootstrap, *",
    ])
    out = result.stdout.str()
    assert "dspy-local optimize code" not in out
    assert not [line for line in out.splitlines() if "snapshot written" in line and "prompt_code." in line]
    assert {k: v for k, v in snapshot_bytes(pytester).items() if "prompt_code." in k} == code_before
    assert len(baseline_of(pytester, "other")["provenance"]["rows"]) == len(CODE_ROWS) + 1
    # Re-recorded, so the next run finds it fresh.
    again = pytester.runpytest(OPTIMIZE_STALE)
    again.stdout.fnmatch_lines(["other: *", "  fresh: not re-optimized"])


def test_plain_run_lists_stale_snapshots_without_failing(
    pytester: pytest.Pytester, optimized_two: pytest.RunResult
) -> None:
    add_row(pytester, "other")
    module = pytester.path / "prompt_code.py"
    module.write_text(module.read_text() + "# an edit that leaves the program alone\n")
    report = Path(pytester.path / "r.json")
    result = pytester.runpytest(f"{JSON_REPORT}={report}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "code: *", "  snapshot stale (module source changed); `pytest --optimize=stale` re-optimizes it",
        "other: *",
        "  snapshot stale (data changed: 1 row added); `pytest --optimize=stale` re-optimizes it",
    ])
    stale = {p["name"]: p["stale"] for p in json.loads(report.read_text())["prompts"]}
    assert stale == {"code": ["module source changed"], "other": ["data changed: 1 row added"]}
    assert "snapshot written" not in result.stdout.str()


def test_update_baseline_keeps_the_provenance(pytester: pytest.Pytester, optimized_two: pytest.RunResult) -> None:
    add_row(pytester, "other")
    recorded = baseline_of(pytester, "other")["provenance"]
    pytester.runpytest(UPDATE_BASELINE).assert_outcomes(passed=2)
    assert baseline_of(pytester, "other")["n"] == len(CODE_ROWS) + 1
    assert baseline_of(pytester, "other")["provenance"] == recorded, "re-recording results re-optimizes nothing"
    pytester.runpytest().stdout.fnmatch_lines(["other: *", "  snapshot stale (data changed: 1 row added); *"])
