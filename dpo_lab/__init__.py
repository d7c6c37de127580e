"""dpo_lab — the helper package of Lab-1.7 (DPO): data, collators, log-probs, the DPO loss, models.

The names imported here are the lab's public API: notebooks, exercises and the autograder use exactly
these names and signatures.
"""

from .collator import PreferenceDataCollator, SFTDataCollator
from .config import LabConfig, get_config, resolve_profile
from .corpus import build_corpus, corpus_fingerprint, write_corpus
from .data import (
    DataValidationError,
    SkipReport,
    extract_prompt,
    load_preference_data,
    messages_to_transcript,
    normalize_row,
)
from .losses import (
    batch_logprobs,
    dpo_loss,
    dpo_metrics,
    reference_logprobs,
    sequence_logprobs,
    sequence_logprobs_lean,
    token_kl,
)
from .models import (
    build_decoder,
    convert_smollm2,
    corpus_tokenizer,
    ensure_pad_token,
    load_pretrained,
    tiny_random_model,
    train_bpe_tokenizer,
)
from .dpo import dpo_step
from .plots import plot_dpo_history, plot_sft_history
from .stats import dataset_statistics, plot_length_distributions, statistics_summary
from .tokenization import tokenize_pair, tokenize_pairs, tokenize_sft_example
from .winrate import bootstrap_ci, win_rate

__all__ = [
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

__version__ = "0.1.0"
