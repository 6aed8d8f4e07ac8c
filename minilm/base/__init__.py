"""The shared base, below every other layer: what every command and library module may use.

textio.py    reading texts and records (.txt .jsonl .csv .tsv .parquet), InputError, atomic writes
stsb.py      STS Benchmark files (tab-separated despite .csv): scores and sentence pairs
numbers.py   one home for numbers read from files and options: finite, in range, the right type, named

It imports nothing of minilm (tests/test_import_hygiene.py holds every layer to that order).
"""
