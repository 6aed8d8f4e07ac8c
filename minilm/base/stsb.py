"""STS Benchmark files (sts-train/dev/test.csv): tab-separated, no header, no quoting.

Despite the .csv name they are not comma-separated: columns 4, 5 and 6 (from 0) are the gold score and
the two sentences, and a quote inside a sentence is literal text. One reader for every user:
`python -m minilm.calibrate --stsb`, the tests and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from .textio import InputError, decoded_lines, open_input, require_input_file


def read_stsb(path: str | Path) -> tuple[list[float], list[str], list[str]]:
    """(gold scores, first sentences, second sentences), one per row, in file order.

    InputError names the file and line of a row with fewer than 7 columns, a score that is not a number,
    or a byte that is not UTF-8.
    """
    require_input_file(str(path))
    scores, first, second = [], [], []
    with open_input(Path(path)) as stream:
        for number, line in decoded_lines(stream, str(path)):
            cols = line.split("\t")
            if len(cols) < 7:
                raise InputError(f"{path}:{number}: expected STS-B's tab-separated columns, got {len(cols)}")
            try:
                scores.append(float(cols[4]))
            except ValueError:
                raise InputError(f"{path}:{number}: the score (column 5) is {cols[4][:40]!r}, not a number") from None
            first.append(cols[5])
            second.append(cols[6])
    return scores, first, second
