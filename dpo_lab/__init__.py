"""dpo_lab — the helper package of Lab-1.7 (DPO): data, collators, log-probs, the DPO loss, models.

The names imported here are the lab's public API: notebooks, exercises and the autograder use exactly
these names and signatures.
"""

from ._version import __version__
from .core.collator import PreferenceDataCollator, SFTDataCollator
from .core.losses import dpo_loss, dpo_metrics, sequence_logprobs, token_kl
from .core.tokenization import tokenize_pair, tokenize_pairs, tokenize_sft_example
from .data.corpus import build_corpus, corpus_fingerprint, write_corpus
from .data.sources import (
    DataValidationError,
    SkipReport,
    extract_prompt,
    load_preference_data,
    messages_to_transcript,
    normalize_row,
)
from .data.stats import dataset_statistics, plot_length_distributions, statistics_summary
from .evaluation.plots import plot_dpo_history, plot_sft_history
from .evaluation.winrate import bootstrap_ci, win_rate
from .fast.scored_logprobs import batch_logprobs, reference_logprobs, sequence_logprobs_lean
from .run.config import LabConfig, get_config, resolve_profile
from .run.models import (
    build_decoder,
    convert_smollm2,
    corpus_tokenizer,
    ensure_pad_token,
    load_pretrained,
    tiny_random_model,
    train_bpe_tokenizer,
)
from .training.dpo import dpo_step

__all__ = [
    "__version__",
    "DataValidationError",
    "LabConfig",
    "PreferenceDataCollator",
    "SFTDataCollator",
    "SkipReport",
    "batch_logprobs",
    "bootstrap_ci",
    "build_corpus",
    "build_decoder",
    "convert_smollm2",
    "corpus_fingerprint",
    "corpus_tokenizer",
    "dataset_statistics",
    "dpo_loss",
    "dpo_metrics",
    "dpo_step",
    "ensure_pad_token",
    "extract_prompt",
    "get_config",
    "load_pretrained",
    "load_preference_data",
    "messages_to_transcript",
    "normalize_row",
    "plot_dpo_history",
    "plot_length_distributions",
    "plot_sft_history",
    "reference_logprobs",
    "resolve_profile",
    "sequence_logprobs",
    "sequence_logprobs_lean",
    "statistics_summary",
    "tiny_random_model",
    "tokenize_pair",
    "tokenize_pairs",
    "tokenize_sft_example",
    "token_kl",
    "train_bpe_tokenizer",
    "win_rate",
    "write_corpus",
]
