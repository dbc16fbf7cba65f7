"""Text helpers shared by the app and the prompt metrics.

Order numbers look like ``A-10293``: one letter, a hyphen, five digits. Customers
type them as ``a10293``, ``#A-10293`` or ``A 10293``; every form normalizes to
``A-10293`` so the app, its tests and the prompt metrics agree on one spelling.
"""

from __future__ import annotations

import re

# A letter, then an optional hyphen/dash or space, then exactly five digits. The
# boundaries keep ``SKU TX-44101`` and ``1Z999AA10123456784`` from matching.
_ORDER_ID = re.compile(r"(?<![A-Z0-9])([A-Z])[ \-\u2010-\u2015]?(\d{5})(?![0-9])")
_CANONICAL = re.compile(r"[A-Z]-\d{5}")


def find_order_ids(text: str) -> list[str]:
    """Every order number in ``text``, normalized, in order of appearance."""
    return [f"{letter}-{digits}" for letter, digits in _ORDER_ID.findall(text.upper())]


def normalize_order_id(text: str) -> str:
    """The first order number in ``text`` as ``A-12345``; the stripped, uppercased text if none."""
    found = find_order_ids(text)
    return found[0] if found else text.strip().upper()


def is_valid_order_id(text: str) -> bool:
    """Is ``text`` exactly one order number in canonical form (``A-12345``)?"""
    return _CANONICAL.fullmatch(text) is not None
