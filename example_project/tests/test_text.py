"""Unit tests of support_bot.text: plain pytest, no model involved."""

from __future__ import annotations

import pytest

from support_bot.text import find_order_ids, is_valid_order_id, normalize_order_id


@pytest.mark.parametrize(
    "typed",
    ["A-10293", "a-10293", "  A-10293\n", "#A-10293", "A10293", "A 10293", "A\u201310293", "order no. a10293."],
)
def test_normalize_order_id_accepts_the_ways_customers_type_it(typed: str) -> None:
    assert normalize_order_id(typed) == "A-10293"


def test_normalize_order_id_takes_the_first_of_several() -> None:
    assert normalize_order_id("Swap B-55012 for C-73310 please") == "B-55012"


def test_normalize_order_id_without_an_order_number_returns_the_cleaned_text() -> None:
    assert normalize_order_id("  {order_id} ") == "{ORDER_ID}"


def test_find_order_ids_ignores_phone_numbers_dates_and_prices() -> None:
    message = "Call 555-201-3344 about order C-73310 from 03/14/2025, paid $49.99 (case #48213)"
    assert find_order_ids(message) == ["C-73310"]


def test_find_order_ids_ignores_longer_codes_that_contain_an_order_shape() -> None:
    message = "tracking 1Z999AA10123456784, SKU TX-44101, VAT DE812345678, RMA-5521"
    assert find_order_ids(message) == []


def test_find_order_ids_requires_exactly_five_digits() -> None:
    assert find_order_ids("A-1029 and A-102934") == []


@pytest.mark.parametrize("text", ["A-10293", "Z-00000"])
def test_is_valid_order_id_accepts_the_canonical_form(text: str) -> None:
    assert is_valid_order_id(text)


@pytest.mark.parametrize("text", ["a-10293", "A10293", " A-10293", "A-10293 ", "AB-10293", "A-1029", ""])
def test_is_valid_order_id_rejects_anything_else(text: str) -> None:
    assert not is_valid_order_id(text)
