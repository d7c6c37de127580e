"""Preference data: every source behind one loader, the offline controlled corpus, statistics and token tables."""

from .corpus import build_corpus, corpus_fingerprint, write_corpus
from .inspection import batch_table, mask_picture, token_table
from .sources import (
    OFFLINE_SOURCE,
    DataValidationError,
    SkipReport,
    extract_prompt,
    load_preference_data,
    messages_to_transcript,
    normalize_row,
    peek_raw_rows,
)
from .stats import dataset_statistics, plot_length_distributions, statistics_summary

__all__ = [
    "OFFLINE_SOURCE",
    "DataValidationError",
    "SkipReport",
    "batch_table",
    "build_corpus",
    "corpus_fingerprint",
    "dataset_statistics",
    "extract_prompt",
    "load_preference_data",
    "mask_picture",
    "messages_to_transcript",
    "normalize_row",
    "peek_raw_rows",
    "plot_length_distributions",
    "statistics_summary",
    "token_table",
    "write_corpus",
]
