"""The reviewable artifacts' formats, pinned with syrupy: a change to them shows in review."""

from __future__ import annotations

from typing import Literal

import dspy
from syrupy.assertion import SnapshotAssertion

from pytest_dspy_local.core.evaluation import example_id
from pytest_dspy_local.core.files import stable_json
from pytest_dspy_local.core.snapshot import program_shape, render_prompt


class Triage(dspy.Signature):
    """Route a support ticket to the team that handles it."""

    ticket: str = dspy.InputField()
    team: Literal["billing", "tech", "account"] = dspy.OutputField()


def test_rendered_prompt_with_a_demo(snapshot: SnapshotAssertion) -> None:
    program = dspy.Predict(Triage)
    program.demos = [dspy.Example(ticket="Please refund my last invoice", team="billing")]
    assert render_prompt("triage", program, {"ticket": "The app crashes on start"}) == snapshot


def test_stable_json_sorts_keys_and_ends_with_a_newline(snapshot: SnapshotAssertion) -> None:
    text = stable_json({"b": 1, "a": {"d": [2, 1], "c": "é"}})
    assert text == snapshot
    assert text == stable_json({"a": {"c": "é", "d": [2, 1]}, "b": 1})


def test_example_id_ignores_key_order() -> None:
    assert example_id({"a": 1, "b": "x"}) == example_id({"b": "x", "a": 1})
    assert example_id({"a": 1}) != example_id({"a": 2})


def test_program_shape_names_predictors_and_fields() -> None:
    assert program_shape(dspy.Predict(Triage)) == {"self": {"inputs": ["ticket"], "outputs": ["team"]}}
