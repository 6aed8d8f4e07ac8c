"""minilm.base.numbers: the one check for numbers read from files and options, case by case."""

from __future__ import annotations

import math

import pytest

from minilm.base.numbers import NumberError, checked_number, parse_number


@pytest.mark.parametrize(
    "value, bounds, expected",
    [
        (256, {"integer": True, "minimum": 3}, 256),
        (1e-12, {"above": 0, "maximum": 1}, 1e-12),
        (2, {}, 2.0),  # a JSON integer where a float belongs
        (0, {"minimum": 0}, 0.0),
        (1, {"minimum": 0, "maximum": 1}, 1.0),  # the bounds are inclusive
    ],
)
def test_numbers_in_range_pass(value, bounds, expected):
    number = checked_number(value, "x", **bounds)
    assert number == expected and type(number) is type(expected)


@pytest.mark.parametrize(
    "value, bounds, message",
    [
        (math.nan, {}, "x must be a finite number, got nan"),
        (math.inf, {"minimum": 0}, "x must be a finite number >= 0, got inf"),
        (-1e-9, {"minimum": 0}, "x must be a finite number >= 0, got -1e-09"),
        (0, {"above": 0}, "x must be a finite number > 0, got 0.0"),
        (3.5, {"integer": True}, "x must be an integer, got 3.5"),
        (2.0, {"integer": True}, "x must be an integer, got 2.0"),
        (True, {"integer": True}, "x must be an integer, got True"),
        ("256", {"integer": True}, "x must be an integer, got '256'"),  # a file's number must be a JSON number
        (None, {}, "x must be a finite number, got None"),
        (10**9, {"integer": True, "maximum": 256}, "x must be an integer <= 256, got 1000000000"),
        ("x" * 100, {}, "x must be a finite number, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."),
    ],
)
def test_everything_else_is_one_line_naming_the_place(value, bounds, message):
    with pytest.raises(NumberError) as caught:
        checked_number(value, "x", **bounds)
    assert str(caught.value) == message and caught.value.problem == message.removeprefix("x ")


def test_option_text_is_parsed_then_checked():
    assert parse_number(" 7 ", "--n", integer=True, minimum=1) == 7
    assert parse_number("1e-3", "--lr", above=0) == 0.001
    for text, bounds, message in [
        ("nan", {"above": 0}, "--x must be a finite number > 0, got nan"),
        ("ten", {"above": 0}, "--x must be a finite number > 0, got 'ten'"),
        ("2.5", {"integer": True, "minimum": 1}, "--x must be an integer >= 1, got '2.5'"),
        ("0", {"integer": True, "minimum": 1}, "--x must be an integer >= 1, got 0"),
    ]:
        with pytest.raises(NumberError) as caught:
            parse_number(text, "--x", **bounds)
        assert str(caught.value) == message
