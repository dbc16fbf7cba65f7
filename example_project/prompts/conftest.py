"""Evaluation data for the prompt modules that take theirs from a fixture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def order_messages_path() -> Path:
    """The customer messages with a known order number (shared with the support team's QA)."""
    return DATA / "order_messages.yaml"


@pytest.fixture
def order_id_dataset(order_messages_path: Path) -> list[dict[str, Any]]:
    """Examples for prompt_order_id.py: ``message`` in, canonical ``order_id`` expected."""
    records = yaml.safe_load(order_messages_path.read_text(encoding="utf-8"))
    # The QA file also tags each message with its channel; the prompt sees only the text.
    return [{"message": r["message"].strip(), "order_id": r["order_id"]} for r in records]
