"""The settings vocabulary of validation.py: one wording for every bound, in every caller."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from hyperdash_otel import validation as v


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: v.integer("80", "port", 0, 65535), TypeError, "port must be an int, got str"),
    (lambda: v.integer(True, "port", 0, 65535), TypeError, "port must be an int, got bool"),
    (lambda: v.integer(70000, "port", 0, 65535), ValueError,
     "port must be >= 0 and <= 65535, got 70000"),
    (lambda: v.integer(0, "count", 1), ValueError, "count must be >= 1, got 0"),
    (lambda: v.integer(10**40, "count", 1, 5), ValueError,
     "count must be >= 1 and <= 5, got 100000000000...(41 characters)"),
    (lambda: v.flag(1, "enabled"), TypeError, "enabled must be a bool, got int"),
    (lambda: v.number("2", "rate", 0), TypeError, "rate must be a number, got str"),
    (lambda: v.number(-1, "rate", 0, note=" (0: no limit)"), ValueError,
     "rate must be >= 0 (0: no limit), got -1"),
    (lambda: v.number(float("nan"), "rate", 0), ValueError, "rate must be >= 0, got nan"),
    (lambda: v.number(10**400, "rate", 0), ValueError,
     "rate is too large, got an int of 401 digits"),
    (lambda: v.number(0, "speed", 0, 100, low_open=True), ValueError,
     "speed must be > 0 and <= 100, got 0"),
    (lambda: v.duration("5m", "stall_after"), TypeError,
     "stall_after must be seconds (float) or a timedelta, got str"),
    (lambda: v.duration(0.01, "update_interval", 0.05), ValueError,
     "update_interval must be >= 0.05 s, got 0.01"),
    (lambda: v.duration(float("inf"), "timeout", 0, low_open=True), ValueError,
     "timeout must be > 0 s, got inf"),
])
def test_each_check_names_the_value_and_its_bound(
    call: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message


def test_checks_return_the_value_in_its_settled_form() -> None:
    assert v.integer(5, "n", 1, 5) == 5
    assert v.flag(False, "f") is False
    assert v.number(3, "rate", 0) == 3.0 and isinstance(v.number(3, "rate", 0), float)
    assert v.duration(timedelta(minutes=2), "stall_after") == 120.0
    assert v.duration(0, "stall_after") == 0.0


def test_bound_problem_is_what_the_command_line_prints() -> None:
    assert v.bound_problem(5, 1) is None
    assert v.bound_problem(0.0, 0.05, unit=" s", shown="0") == "must be >= 0.05 s, got 0"
    assert v.bound_problem(float("nan")) == "must be finite, got nan"


@pytest.mark.parametrize(("value", "shown"), [
    ("job-1", "'job-1'"),
    ("a" * 62, repr("a" * 62)),  # 64 with its quotes: whole
    ("a" * 63, "'" + "a" * 47 + "...(63 characters)"),  # the value's length, not its repr's
    ("é\x00" * 40, repr("é\x00" * 40)[:48] + "...(80 characters)"),
    (["x"] * 20, repr(["x"] * 20)[:48] + "...(100 characters)"),  # not a str: its repr's
])
def test_quoted_cuts_a_long_value_short_and_says_how_long(value: str, shown: str) -> None:
    assert v.quoted(value) == shown


def test_clipped_keeps_64_characters_whole_and_cuts_a_longer_text() -> None:
    assert v.clipped("o" * 64) == "o" * 64
    assert v.clipped("o" * 65) == "o" * 48 + "...(65 characters)"
    assert v.clipped("o" * 65, 7) == "o" * 48 + "...(7 characters)"
