"""support_bot: a customer-support assistant that routes tickets and looks up orders."""

from __future__ import annotations

from support_bot.text import find_order_ids, is_valid_order_id, normalize_order_id

__all__ = ["find_order_ids", "is_valid_order_id", "normalize_order_id"]
