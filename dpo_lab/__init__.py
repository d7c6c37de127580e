"""dpo_lab — the helper package of Lab-1.7 (DPO).

The names imported here are the lab's public API: notebooks, exercises and the autograder use exactly
these names and signatures. The package is layered (lowest first; a layer imports only the ones before it,
``tests/test_import_graph.py`` checks it):

- :mod:`dpo_lab.infra` — atomic files, device / precision / seeding / distributed, manifests, checkpoints
- :mod:`dpo_lab.core` — the teaching core in plain torch: HH format, tokenization, collators, log-probs, DPO loss
- :mod:`dpo_lab.fast` — the core's numbers, faster: scored LM head, lean log-probs, reference cache
- :mod:`dpo_lab.training` — the SFT and DPO loops
- :mod:`dpo_lab.data` — data sources, the offline corpus, statistics
- :mod:`dpo_lab.run` — configuration, run-folder layout, models, stages 01-03
- :mod:`dpo_lab.evaluation` — stage 04: generation, judges, win rates, Elo, safety, bias, report, plots
- :mod:`dpo_lab.course` — exercise rubric, self-checks, autograder, student notebooks, notebook runner
- :mod:`dpo_lab.cli` — ``python -m dpo_lab``
"""

import logging

from ._version import __version__
from .core import (
    PreferenceDataCollator,
    SFTDataCollator,
    dpo_loss,
    dpo_metrics,
    sequence_logprobs,
    tokenize_pair,
    tokenize_pairs,
    tokenize_sft_example,
)
from .data import (
    DataValidationError,
    build_corpus,
    dataset_statistics,
    extract_prompt,
    load_preference_data,
    messages_to_transcript,
    normalize_row,
    plot_length_distributions,
    statistics_summary,
)
from .evaluation import plot_dpo_history, plot_sft_history, win_rate
from .fast import batch_logprobs, reference_logprobs, sequence_logprobs_lean
from .run import get_config
from .run.models import build_decoder, load_pretrained, tiny_random_model
from .run.tokenizers import corpus_tokenizer, train_bpe_tokenizer
from .training import dpo_step

# bitsandbytes (imported by peft) warns on AVX512-BF16 CPUs that an optional kernel from the Hub is missing: the
# lab never needs it (load_in_4bit runs bitsandbytes' own CPU code), and students would read it as an error
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__all__ = [
    "DataValidationError",
    "PreferenceDataCollator",
    "SFTDataCollator",
    "__version__",
    "batch_logprobs",
    "build_corpus",
    "build_decoder",
    "corpus_tokenizer",
    "dataset_statistics",
    "dpo_loss",
    "dpo_metrics",
    "dpo_step",
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
    "sequence_logprobs",
    "sequence_logprobs_lean",
    "statistics_summary",
    "tiny_random_model",
    "tokenize_pair",
    "tokenize_pairs",
    "tokenize_sft_example",
    "train_bpe_tokenizer",
    "win_rate",
]
