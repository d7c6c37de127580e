"""The core's numbers, faster: the LM head on scored positions only, lean log-probs, the reference cache.

Each path is tested against the textbook one in :mod:`dpo_lab.core` (same log-probs and gradients up
to float rounding). The core never imports this layer; the training loops choose it.
"""

from .reference_cache import ensure_reference_logps
from .scored_logprobs import batch_logprobs, reference_logprobs, scored_sequence_logprobs, sequence_logprobs_lean

__all__ = [
    "batch_logprobs",
    "ensure_reference_logps",
    "reference_logprobs",
    "scored_sequence_logprobs",
    "sequence_logprobs_lean",
]
