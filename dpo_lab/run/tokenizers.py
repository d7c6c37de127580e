"""Tokenizers: the byte-level BPE trained on the offline corpus (``cpu`` profile) and a pad token for any tokenizer."""

from __future__ import annotations

EOS_TOKEN = "<|endoftext|>"  # same text as GPT-2's, so prompts and notebooks read the same on every profile


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 4096, min_frequency: int = 2):
    """A byte-level BPE tokenizer (GPT-2's algorithm) trained on `texts`, as a regular HF tokenizer.

    Like GPT-2 it has one special token, ``<|endoftext|>``, used as EOS and — as students do with
    GPT-2 — as the pad token too, so the "pad == eos" pitfall is present on every profile.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS_TOKEN], show_progress=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=1024
    )


def corpus_tokenizer(seed: int = 0, vocab_size: int = 4096):
    """The ``cpu``/``smoke`` profiles' tokenizer, trained on the offline corpus' training side."""
    from ..data.corpus import corpus_texts

    return train_bpe_tokenizer(corpus_texts(seed), vocab_size=vocab_size)


def ensure_pad_token(tokenizer):
    """GPT-2-style tokenizers have no pad token: use EOS (the collators never mask by token value)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
