"""The one check for numbers that come from outside: config files, checkpoint metadata and options.

Every number the project reads from a file or a command line passes `checked_number` before it is
used, so that NaN, infinity, a bool, 3.5 where a count belongs, or a value out of range is refused
in one line that names where it came from (`config.json: "layer_norm_eps"`, `--lr-heads`) and what
would be accepted, instead of surfacing later as a NaN vector, a hang or a traceback.

    checked_number(raw["layer_norm_eps"], 'config.json: "layer_norm_eps"', above=0, maximum=1)
    checked_number(value, "--warmup", minimum=0, maximum=1)                # value: float or str
    checked_number(raw["num_hidden_layers"], "...", integer=True, minimum=1, maximum=1024)

A string is parsed first (options arrive as text); JSON's own numbers arrive as int or float.
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
    number: int | float
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text) if integer else float(text)
        except ValueError:
            raise NumberError(where, f"must be {wanted}, got {_describe(value)}") from None
    elif isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise NumberError(where, f"must be {wanted}, got {_describe(value)}")
    else:
        number = value
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
