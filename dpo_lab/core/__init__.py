"""The teaching core: what a student reads top to bottom, in plain torch (no other library, no other layer).

Read in this order: ``hh_format`` (the transcript's role tags) → ``tokenization`` (prompt/response
ids, EOS, where the boundary falls) → ``collator`` (the ``[chosen; rejected]`` batch and its loss mask)
→ ``losses`` (sequence log-probs, the DPO loss and its metrics) → ``model_modes`` (dropout off,
the reference frozen). The faster paths that give the same numbers live in :mod:`dpo_lab.fast`; the
loops that use them in :mod:`dpo_lab.training`.
"""

from .collator import PreferenceDataCollator, SFTDataCollator, merge_pair_batches
from .hh_format import ASSISTANT_TAG, HUMAN_TAG
from .losses import dpo_loss, dpo_metrics, sequence_logprobs, token_kl
from .model_modes import disable_dropout, freeze
from .tokenization import tokenize_pair, tokenize_pairs, tokenize_sft_example

__all__ = [
    "disable_dropout",
    "freeze",
    "ASSISTANT_TAG",
    "HUMAN_TAG",
    "PreferenceDataCollator",
    "SFTDataCollator",
    "dpo_loss",
    "dpo_metrics",
    "merge_pair_batches",
    "sequence_logprobs",
    "token_kl",
    "tokenize_pair",
    "tokenize_pairs",
    "tokenize_sft_example",
]
