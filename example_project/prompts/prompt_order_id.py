"""Order lookup: pull the order number out of a customer's free-text message.

Evaluated by pytest-dspy-local on the `order_id_dataset` fixture (prompts/conftest.py),
which reads prompts/data/order_messages.yaml.
"""

from __future__ import annotations

import dspy

from support_bot.text import normalize_order_id


class OrderId(dspy.Signature):
    """Find the order number in a customer's message."""

    message: str = dspy.InputField()
    order_id: str = dspy.OutputField(desc="the order number, like A-12345")


program = dspy.Predict(OrderId)


def metric(example: dspy.Example, prediction: dspy.Prediction, trace: object | None = None) -> bool:
    """Same order once both are normalized: the app accepts "a10293" as A-10293 too."""
    return normalize_order_id(str(prediction.order_id)) == normalize_order_id(example.order_id)


# The embedded SmolLM2-135M model's measured score as written: 10/24 = 0.417. It finds clean
# ids but misses ones near dates, phone numbers or prices, and sometimes echoes "{order_id}".
# The optimized snapshot (few-shot demos) scores 15/24 = 0.625; the stored baseline guards that.
# A team that runs a bigger model measures again and raises this to just under that score.
threshold = 0.4
