"""The grader's fixed tiny world: a tokenizer and a policy/reference model pair shipped in the package.

Shipped as files (``dpo_lab/fixtures/grading/``, about 350 KB with the text snapshot) rather than rebuilt
from a seed, so the exact values quoted in the exercise text do not move with a torch or tokenizers release. The
tokenizer is byte-level BPE with ``<|endoftext|>`` as both EOS and pad (GPT-2's situation: the
"pad == eos" pitfall is present); the two models are 2-layer GPT-2 decoders with different random
weights, so the reference differs from the policy (a copy would give ln 2 whatever the code does).

The tokenizer is trained on a frozen snapshot of the corpus' texts (``corpus/tokenizer_texts.jsonl.gz``,
3000 texts of corpus version 3), not on today's corpus: the grading world must not move when the corpus
does, or every quoted exact value would change with it.

Rebuild (only if the files are lost): ``python -m dpo_lab.course.grading_fixture``.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "grading"
TOKENIZER_TEXTS = FIXTURE_DIR / "corpus" / "tokenizer_texts.jsonl.gz"  # one JSON string a line
POLICY_SEED, REFERENCE_SEED = 1, 2

# The pair of the exact-value exercises (notebooks 02 and 03 spell out how it is tokenized).
EXACT_PROMPT = "\n\nHuman: Why is the sky blue?\n\nAssistant:"
EXACT_CHOSEN = " Sunlight scatters off air molecules, and blue light scatters the most."
EXACT_REJECTED = " Because it is."
EXACT_BETA = 0.1


def build_fixture(out_dir: str | Path = FIXTURE_DIR) -> Path:
    """Train the small tokenizer on the frozen corpus snapshot and save it with two seeded tiny models."""
    import gzip
    import json

    import torch
    from transformers import GPT2LMHeadModel

    from ..run.models import gpt2_config
    from ..run.tokenizers import train_bpe_tokenizer

    out = Path(out_dir)
    texts = [json.loads(line) for line in gzip.decompress(TOKENIZER_TEXTS.read_bytes()).decode("utf-8").splitlines()]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=512)
    tokenizer.save_pretrained(out / "tokenizer")
    config = gpt2_config(len(tokenizer), n_layer=2, n_embd=16, n_head=2, n_positions=128, tokenizer=tokenizer)
    config.initializer_range = 0.3  # larger than GPT-2's 0.02: the two models' log-probs differ by nats, not hundredths
    for name, seed in (("policy", POLICY_SEED), ("reference", REFERENCE_SEED)):
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(out / name, safe_serialization=True)
    return out


_LOADING = threading.Lock()  # the grader judges several submissions in threads; loading patches torch globally


def fixture_tokenizer():
    with _LOADING:
        return _loaded_tokenizer()


@lru_cache(maxsize=1)
def _loaded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(FIXTURE_DIR / "tokenizer")


@lru_cache(maxsize=1)
def _loaded_models():
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    from ..core.model_modes import disable_dropout

    quiet = not logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # the grader loads these once per run: no "Loading weights" bars in its output
    try:
        return tuple(
            disable_dropout(GPT2LMHeadModel.from_pretrained(FIXTURE_DIR / name)).eval()
            for name in ("policy", "reference")
        )
    finally:
        if not quiet:
            logging.enable_progress_bar()


def fixture_models():
    """Fresh copies of ``(policy, reference)``: eval mode, dropout off, fp32; the caller may train or change them."""
    import copy

    with _LOADING:
        models = _loaded_models()
    return tuple(copy.deepcopy(m) for m in models)


def exact_pair_batch():
    """The exact-value pair, tokenized by :func:`dpo_lab.tokenize_pair` and collated (rows: chosen, rejected)."""
    return {k: v.clone() for k, v in _exact_pair_batch().items()}


@lru_cache(maxsize=1)
def _exact_pair_batch():
    from ..core.collator import PreferenceDataCollator
    from ..core.tokenization import tokenize_pair

    tokenizer = fixture_tokenizer()
    with _LOADING:  # one fast tokenizer, several grading threads
        return PreferenceDataCollator(tokenizer)([tokenize_pair(tokenizer, EXACT_PROMPT, EXACT_CHOSEN, EXACT_REJECTED)])


if __name__ == "__main__":
    print(build_fixture())
