"""CSV tables that come back exactly as they were written, whatever text is in them.

Answers a model generates can hold anything: newlines, a lone carriage return, quotes, commas, NUL bytes,
zh-TW text, strings such as "NA". pandas' default CSV writer quotes only fields that need it and its reader
splits a quoted field at a lone ``\\r``: generated answers came back cut and shifted into other columns. Every
field quoted, ``\\n`` between rows, UTF-8, and reading with ``keep_default_na=False`` makes the round trip
lossless (tests/test_stage_data_and_cli.py writes and reads back hostile text).

Anyone re-scoring a saved table: ``pd.read_csv(path, keep_default_na=False)`` (or :func:`read_text_table`).
"""

from __future__ import annotations

import csv
from pathlib import Path


def write_table(table, path: str | Path) -> Path:
    """``table`` (a DataFrame) to ``path`` as CSV: every field quoted, ``\\n`` line ends, UTF-8, no index."""
    path = Path(path)
    table.to_csv(path, index=False, quoting=csv.QUOTE_ALL, lineterminator="\n", encoding="utf-8")
    return path


def read_text_table(path: str | Path):
    """A table written by :func:`write_table` with every string as written ("NA" and "" stay strings): for tables
    of text such as generations.csv. A table of numbers reads fine with plain ``pd.read_csv`` (empty cells → NaN).
    """
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, encoding="utf-8")
