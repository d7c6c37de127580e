"""LoRA adapters and the 4-bit base they can train on (QLoRA): loading, the reference, saving.

``lora=true``: peft adds rank-``lora_r`` adapters to every linear layer; only they train, and the reference
is the very same model with its adapters switched off (no second copy of the weights).
``load_in_4bit=true`` (with ``lora``): the frozen base is loaded in 4-bit NF4 with double quantisation
(bitsandbytes, through transformers' ``BitsAndBytesConfig``), matmuls run in the precision policy's dtype.
That is how a 7B model trains on a 16 GB card: ~3.9 GB of weights instead of 29 GB (fp32).

Saving (``lora_save``): ``"adapter"`` writes only the adapters (a few MB; ``PeftModel.from_pretrained(base,
folder)``, or ``AutoModelForCausalLM.from_pretrained(folder)`` which reads the base's path from
``adapter_config.json``); ``"merged"`` folds them into full-precision base weights (reloaded unquantised:
merging into 4-bit weights would round them) and writes a plain model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..infra.precision import Precision


def quantization_config(precision: Precision):
    """NF4, double-quantised block scales, compute in the policy's 16-bit dtype (fp32 on the CPU)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=precision.autocast_dtype or torch.float32,
    )


def load_quantized(source: str | Path, device: torch.device, precision: Precision):
    """The model at ``source`` (folder or Hub id) with its linear layers in 4-bit, ready for LoRA training."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ImportError("load_in_4bit=true needs bitsandbytes: pip install -r requirements.txt") from e
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        source,
        quantization_config=quantization_config(precision),
        dtype=precision.autocast_dtype or torch.float32,
        device_map={"": str(device)},
    )
    if torch.device(device).type == "cpu":
        # bitsandbytes 0.50 repacks 4-bit weights for AVX512-BF16 inference at the first eval-mode forward and
        # never unpacks them for training (the next training forward fails); keep the training layout
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    # norms and embeddings to fp32, inputs that require grad; checkpointing is the loops' option, not done here
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def add_lora(model, r: int):
    """Rank-``r`` adapters on every linear layer (alpha = 2r, no dropout): only they train."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model,
        LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False))


def model_to_save(policy, *, how: str, base_source: str | Path, dtype: torch.dtype = torch.float32):
    """What a finished LoRA run writes: the peft model itself (``"adapter"``) or a plain merged model.

    A 4-bit policy is merged into the base reloaded from ``base_source`` at ``dtype`` on the CPU, with the
    trained adapter weights copied over; an unquantised one merges in place.
    """
    if how == "adapter":
        return policy
    if how != "merged":
        raise ValueError(f"lora_save must be 'merged' or 'adapter', not {how!r}")
    if not is_quantized(policy.get_base_model()):
        return policy.merge_and_unload()
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    adapters = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(policy).items()}
    base = AutoModelForCausalLM.from_pretrained(base_source, dtype=dtype)
    fresh = get_peft_model(base, policy.peft_config["default"])
    set_peft_model_state_dict(fresh, adapters)
    return fresh.merge_and_unload()
