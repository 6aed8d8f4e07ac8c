"""The one check for numbers that come from outside: config files, checkpoint metadata and options.

Every number the project reads from a file or a command line passes `checked_number` before it is
used, so that NaN, infinity, a bool, 3.5 where a count belongs, or a value out of range is refused
in one line that names where it came from (`config.json: "layer_norm_eps"`, `--lr-heads`) and what
would be accepted, instead of surfacing later as a NaN vector, a hang or a traceback.

    checked_number(raw["layer_norm_eps"], 'config.json: "layer_norm_eps"', above=0, maximum=1)
    checked_number(raw["num_hidden_layers"], "...", integer=True, minimum=1, maximum=256)
    parse_number("0.1", "--warmup", minimum=0, maximum=1)                  # an option's text

A file's numbers must be JSON numbers: "256" (a string) is refused, as it would be by the reference
implementations that read the same files. Options arrive as text and go through `parse_number`.
"""

from __future__ import annotations

import math


class NumberError(ValueError):
    """A number from a file or an option that cannot be used; str() names where it came from.

    `problem` is the message without the place ("must be an integer >= 1, got 3.5"), for callers that
    name the place themselves (argparse prefixes "argument --batch-size:").
    """

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where} {problem}")
        self.where, self.problem = where, problem


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bounds(integer: bool, minimum, maximum, above) -> str:
    kind = "an integer" if integer else "a finite number"
    parts = []
    if above is not None:
        parts.append(f"> {above}")
    if minimum is not None:
        parts.append(f">= {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return kind + (f" {' and '.join(parts)}" if parts else "")


def checked_number(
    value: object,
    where: str,
    *,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> int | float:
    """`value` as an int (integer=True) or a float, finite and in range; else a NumberError naming `where`.

    minimum/maximum are inclusive bounds, above an exclusive lower bound (a learning rate, an epsilon).
    An integer must be written as one: 3.5 or 2.0 for a count is refused, as is true/false.
    """
    wanted = _bounds(integer, minimum, maximum, above)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise NumberError(where, f"must be {wanted}, got {_describe(value)}")
    number: int | float = value
    if not integer:
        number = float(number)
        if not math.isfinite(number):
            raise NumberError(where, f"must be {wanted}, got {_describe(value)}")
    if (
        (above is not None and not number > above)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise NumberError(where, f"must be {wanted}, got {_describe(number)}")
    return number


def parse_number(text: str, where: str, **bounds) -> int | float:
    """`checked_number` (same bounds) for a number written as text (an option, a TASK=VALUE): "nan", "2.5"
    for a count and "ten" are NumberErrors naming `where`, as out-of-range values are."""
    integer = bounds.get("integer", False)
    try:
        value: int | float = int(text) if integer else float(text)
    except ValueError:
        wanted = _bounds(integer, bounds.get("minimum"), bounds.get("maximum"), bounds.get("above"))
        raise NumberError(where, f"must be {wanted}, got {_describe(text)}") from None
    return checked_number(value, where, **bounds)
