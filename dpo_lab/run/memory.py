"""Memory planned, not discovered: peak memory of one DPO step by parts, and the batch that fits a budget.

The parts (bytes), for a model of P parameters of which T train, R tokens per micro-batch (2 x pairs x
sequence length), L layers of width d and MLP width f:

============================  ==================================================================
weights                       P x 4 (fp32 under autocast); 4-bit: linear layers 0.52 B/param (NF4 + its
                              double-quantised block scales), the rest in the 16-bit compute dtype
LoRA adapters                 r x (in + out) per linear layer, fp32
gradients                     T x 4
optimizer (AdamW)             T x 8 (two fp32 moments)
reference                     live: another P x 4; cached log-probs or adapters off: 0
activations                   R x L x (13 d + 4 f) saved values (5 f for gated MLPs), 4 bytes each in fp32,
                              3.0 in 16-bit autocast on CUDA (layer norms stay fp32) + autocast weight copies;
                              with gradient checkpointing: one d-vector per token and layer + one layer's set
scored head                   scored tokens x vocab x 4 for the kept softmax (if <= 512 MB, as
                              ``dpo_lab.fast.scored_logprobs``) + a 32 MB logits chunk + the head's gradient
evaluation                    full logits of a held-out batch, policy and live reference (its own peak)
============================  ==================================================================

The activation coefficients were measured on GPT-2-shaped models (saved-tensor bytes per token, layer and
width: 117 in fp32 on the CPU; 87 in bf16 autocast on an H200, where the CPU's autocast saves only 65-76).
``bench/memory_plan.py`` checks the whole estimate against measured peak memory (CPU RSS;
``torch.cuda.max_memory_allocated`` in ``scripts/gpu_selfcheck.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GIB = 2**30
DEFAULT_BUDGET = 16 * GIB  # the course's GPU
SAFETY_MARGIN = 1.5 * GIB  # CUDA context (~0.5 GB), allocator fragmentation, the judge/generation extras
KEEP_PROBS_BYTES = 512 * 2**20  # = dpo_lab.fast.scored_logprobs.KEEP_PROBS_BYTES
CHUNK_BYTES = 2**23 * 4
NF4_BYTES_PER_PARAM = 0.5 + 4 / 64 / 4 + 1 / 256  # 4-bit values + double-quantised absmax (8-bit per 64, fp32 per 256)
REFERENCE_MODES = ("live", "cached", "adapters")
# Bytes per saved activation value under 16-bit autocast, measured on an H200 (bf16, GPT-2 small, 512 tokens:
# 8 -> 16 pairs added 6,293 MiB = 3.0 bytes per value, bench/gpu_h200.json). CUDA's autocast keeps fp32 outputs
# of layer norms and softmax beside the bf16 inputs of the next matmul; the CPU's saves 2.2-2.6 (so on the
# CPU this over-estimates, on the safe side).
ACTIVATION_BYTES_16BIT = 3.0

# Shapes the docs quote, usable offline (students with the Hub can name any model: AutoConfig reads it)
KNOWN_CONFIGS = {
    "gpt2": ("gpt2", {}),
    "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16)),
    "gpt2-large": ("gpt2", dict(n_embd=1280, n_layer=36, n_head=20)),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": (
        "llama",
        dict(
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            vocab_size=32000,
        ),
    ),
    "mistralai/Mistral-7B-v0.1": (
        "mistral",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=32000,
        ),
    ),
}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a model: counted on a meta-device instance (no weights are loaded)."""

    name: str
    n_params: int
    linear_params: int  # in the transformer layers' linear maps (what 4-bit quantises and LoRA adapts)
    lora_params_per_rank: int  # sum of (in + out) over those maps: LoRA trains r times this
    n_layer: int
    hidden: int
    mlp: int
    vocab: int
    gated_mlp: bool


def model_shape(model) -> ModelShape:
    """The :class:`ModelShape` of a Hub id / local folder / known name, a transformers config, or a model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    if isinstance(model, torch.nn.Module):
        module, config, name = model, model.config, getattr(model.config, "_name_or_path", "") or "model"
    else:
        if isinstance(model, PretrainedConfig):
            config, name = model, getattr(model, "_name_or_path", "") or model.model_type
        elif model in KNOWN_CONFIGS:
            kind, kwargs = KNOWN_CONFIGS[model]
            config, name = AutoConfig.for_model(kind, **kwargs), model
        else:
            config, name = AutoConfig.from_pretrained(model), model
        with torch.device("meta"):
            module = AutoModelForCausalLM.from_config(config)
    linear, per_rank = 0, 0
    head = module.get_output_embeddings()
    for _, sub in module.named_modules():
        weight = getattr(sub, "weight", None)
        if sub is head or weight is None or weight.dim() != 2 or isinstance(sub, torch.nn.Embedding):
            continue
        linear += weight.numel()
        per_rank += sum(weight.shape)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None) or text.n_embd
    mlp = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    return ModelShape(
        name=name,
        n_params=sum(p.numel() for p in module.parameters()),
        linear_params=linear,
        lora_params_per_rank=per_rank,
        n_layer=getattr(text, "num_hidden_layers", None) or text.n_layer,
        hidden=hidden,
        mlp=mlp,
        vocab=text.vocab_size,
        gated_mlp=hasattr(text, "intermediate_size") and "gelu" not in str(getattr(text, "hidden_act", "")),
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes by part for one training step (``parts``), and the held-out evaluation's own peak."""

    parts: dict[str, int]
    eval_peak: int
    settings: dict = field(default_factory=dict)

    @property
    def train_peak(self) -> int:
        return sum(self.parts.values())

    @property
    def peak(self) -> int:
        return max(self.train_peak, self.eval_peak)

    def table(self) -> str:
        """One line per part in GiB (what doctor and the docs print)."""
        rows = [f"  {name:<22} {value / GIB:7.2f} GiB" for name, value in self.parts.items()]
        rows.append(f"  {'= 訓練一步的峰值':<20} {self.train_peak / GIB:7.2f} GiB")
        rows.append(f"  {'held-out 評估的峰值':<20} {self.eval_peak / GIB:7.2f} GiB")
        return "\n".join(rows)


def estimate_dpo_memory(
    shape: ModelShape,
    *,
    pairs: int,
    seq_len: int,
    response_len: int | None = None,
    precision: str = "fp32",
    lora_r: int | None = None,
    load_in_4bit: bool = False,
    reference: str = "cached",
    gradient_checkpointing: bool = False,
) -> MemoryEstimate:
    """Peak memory of one DPO micro-batch of ``pairs`` pairs padded to ``seq_len`` tokens (by part).

    ``response_len``: scored tokens per row (default: half of ``seq_len``). ``precision``: the name of a
    :class:`dpo_lab.infra.precision.Precision` (``fp32``, ``bf16``, ``fp16``). ``reference``: ``live`` (a
    second fp32 model), ``cached`` (log-probs from the cache) or ``adapters`` (LoRA off = the reference).
    """
    if reference not in REFERENCE_MODES:
        raise ValueError(f"reference must be one of {REFERENCE_MODES}, not {reference!r}")
    if load_in_4bit and not lora_r:
        raise ValueError("a 4-bit base cannot be trained itself: give lora_r")
    sixteen = precision in ("bf16", "fp16")
    compute_bytes = 2 if sixteen else 4
    rows = 2 * pairs
    tokens = rows * seq_len
    scored = rows * (response_len if response_len is not None else seq_len // 2)
    other = shape.n_params - shape.linear_params
    if load_in_4bit:
        weights = shape.linear_params * NF4_BYTES_PER_PARAM + other * compute_bytes
    else:
        weights = shape.n_params * 4
    trainable = lora_r * shape.lora_params_per_rank if lora_r else shape.n_params
    parts = {"weights": weights}
    if lora_r:
        parts["LoRA adapters"] = trainable * 4
    parts["gradients"] = trainable * 4
    parts["optimizer (AdamW)"] = trainable * 8
    parts["reference"] = shape.n_params * 4 if reference == "live" else 0

    per_token_layer = 13 * shape.hidden + (5 if shape.gated_mlp else 4) * shape.mlp  # saved values
    act_bytes = ACTIVATION_BYTES_16BIT if sixteen else 4.0
    one_layer = tokens * per_token_layer * act_bytes
    if gradient_checkpointing:
        activations = tokens * shape.n_layer * shape.hidden * 4 + one_layer
    else:
        activations = shape.n_layer * one_layer
    if sixteen and not load_in_4bit:  # autocast keeps a 16-bit copy of each weight it cast, for backward
        activations += shape.linear_params * 2
    parts["activations"] = activations
    probs = scored * shape.vocab * 4
    head_grad = 0 if lora_r else shape.vocab * shape.hidden * 4
    parts["scored head"] = (probs if probs <= KEEP_PROBS_BYTES else 0) + 2 * CHUNK_BYTES + head_grad

    # held-out evaluation (same batch size): full logits of the policy, and of a live / adapters-off reference
    logits = rows * seq_len * shape.vocab * compute_bytes
    models = 2 if reference in ("live", "adapters") else 1
    static = sum(v for k, v in parts.items() if k not in ("activations", "scored head"))
    eval_peak = static + models * logits + seq_len * shape.vocab * 4  # + one row's fp32 log-softmax
    settings = dict(
        pairs=pairs,
        seq_len=seq_len,
        precision=precision,
        lora_r=lora_r,
        load_in_4bit=load_in_4bit,
        reference=reference,
        gradient_checkpointing=gradient_checkpointing,
    )
    return MemoryEstimate({k: int(v) for k, v in parts.items()}, int(eval_peak), settings)


@dataclass(frozen=True)
class BatchPlan:
    """The largest micro-batch that fits, and the accumulation that keeps the effective batch."""

    dpo_batch_size: int
    grad_accum: int
    estimate: MemoryEstimate
    budget: int
    fits: bool

    def summary(self) -> str:
        verdict = "放得下" if self.fits else "放不下：用 LoRA、4-bit、gradient checkpointing 或較短的 max_length"
        return (
            f"dpo_batch_size={self.dpo_batch_size} × grad_accum={self.grad_accum}：估計峰值"
            f" {self.estimate.peak / GIB:.1f} GiB / 預算 {self.budget / GIB:.1f} GiB（{verdict}）"
        )


def plan_dpo_batch(
    shape: ModelShape,
    *,
    effective_batch: int,
    seq_len: int,
    budget: int = DEFAULT_BUDGET - SAFETY_MARGIN,
    max_batch: int | None = None,
    **options,
) -> BatchPlan:
    """The largest ``dpo_batch_size`` dividing ``effective_batch`` whose estimate fits ``budget``, with
    ``grad_accum = effective_batch / dpo_batch_size`` (the same optimizer batch, fewer pairs per forward).

    ``max_batch``: never more pairs per micro-batch than this (a config's own ``dpo_batch_size``).
    ``options`` are :func:`estimate_dpo_memory`'s. When even one pair does not fit, returns that plan
    with ``fits=False``.
    """
    if effective_batch < 1:
        raise ValueError(f"effective_batch must be >= 1, got {effective_batch}")
    largest = min(effective_batch, max_batch or effective_batch)
    divisors = [b for b in range(largest, 0, -1) if effective_batch % b == 0]
    for batch in divisors:
        estimate = estimate_dpo_memory(shape, pairs=batch, seq_len=seq_len, **options)
        if estimate.peak <= budget:
            return BatchPlan(batch, effective_batch // batch, estimate, budget, True)
    return BatchPlan(1, effective_batch, estimate, budget, False)


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= 0.01 * GIB else f"{math.ceil(n / 2**20)} MiB"


def reference_mode(config, use_cache: bool = True, students_step: bool = False) -> str:
    """How the DPO stage will get reference log-probs for ``config`` (what the estimate charges for)."""
    if config.lora:
        return "adapters"
    return "live" if students_step or not use_cache else "cached"


def fit_config_to_memory(config, shape: ModelShape, budget: int, precision: str, reference: str = "cached"):
    """``(config, plan)``: ``config`` unchanged when its DPO micro-batch fits ``budget``, else with the plan's
    ``dpo_batch_size`` x ``grad_accum`` (same effective batch). The GPU stage calls it with the card's memory.
    ``precision``: the chosen :class:`dpo_lab.infra.precision.Precision`'s name.
    """
    from .config import with_overrides

    plan = plan_dpo_batch(
        shape,
        effective_batch=config.dpo_batch_size * config.grad_accum,
        seq_len=config.max_length,
        budget=budget,
        max_batch=config.dpo_batch_size,
        precision=precision,
        lora_r=config.lora_r if config.lora else None,
        load_in_4bit=config.load_in_4bit,
        reference=reference,
        gradient_checkpointing=config.gradient_checkpointing,
    )
    if plan.fits and plan.dpo_batch_size < config.dpo_batch_size:
        config = with_overrides(config, dpo_batch_size=plan.dpo_batch_size, grad_accum=plan.grad_accum)
    return config, plan


def device_budget(device) -> int | None:
    """What this process may allocate on a CUDA device, minus :data:`SAFETY_MARGIN`; None elsewhere (CPU RAM
    is not what runs out). A per-process cap (``torch.cuda.set_per_process_memory_fraction``: a shared card,
    or a 16 GB card simulated on a larger one) counts, not the card's full size."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()  # torch wants the index
    total = torch.cuda.get_device_properties(index).total_memory
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.9
    fraction = get_fraction(index) if get_fraction is not None else 1.0
    return int(total * min(1.0, fraction)) - SAFETY_MARGIN


class MemoryPlanError(RuntimeError):
    """The planner says one micro-batch of one pair does not fit: raised before the model meets the data,
    so the student reads what to change instead of a CUDA out-of-memory trace from deep inside backward."""


def require_fit(plan: BatchPlan, where: str) -> BatchPlan:
    """``plan`` when it fits; else :class:`MemoryPlanError` naming the card, the estimate and the options."""
    if plan.fits:
        return plan
    e = plan.estimate
    raise MemoryPlanError(
        f"{where}：記憶體規劃估計即使 dpo_batch_size=1 也需要 {e.peak / GIB:.1f} GiB，"
        f"超過可用的 {plan.budget / GIB:.1f} GiB（已扣除 {SAFETY_MARGIN / GIB:.1f} GiB 的餘裕）。"
        "請改用其中之一：--set lora=true、--set load_in_4bit=true（需 lora=true）、"
        "--set gradient_checkpointing=true、較小的 max_length，或較小的模型。"
        f"各部分的估計：\n{e.table()}"
    )


# What docs/gpu.md recommends for the course's 16 GB card (tests/test_gpu_readiness.py checks the page against it)
RECOMMENDED = (
    ("gpt2", "全參數，reference 快取", dict(reference="cached")),
    (
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "LoRA r=16，reference = 關掉 adapters",
        dict(lora_r=16, reference="adapters"),
    ),
    (
        "mistralai/Mistral-7B-v0.1",
        "4-bit NF4 + LoRA r=16 + gradient checkpointing",
        dict(lora_r=16, load_in_4bit=True, reference="adapters", gradient_checkpointing=True),
    ),
)


def recommended_plans(
    budget: int = DEFAULT_BUDGET - SAFETY_MARGIN, seq_len: int = 512, effective_batch: int = 16, precision="bf16"
) -> list[tuple[str, str, BatchPlan]]:
    """The planner's settings for each :data:`RECOMMENDED` model (estimates: only GPT-2 shapes were measured)."""
    return [
        (name, how, plan_dpo_batch(model_shape(name), effective_batch=effective_batch, seq_len=seq_len,
                                   budget=budget, precision=precision, **options))
        for name, how, options in RECOMMENDED
    ]  # fmt: skip


def recommended_table(plans: list[tuple[str, str, BatchPlan]]) -> str:
    """Markdown: one row per model with the plan and its estimate by part (GiB)."""
    lines = [
        "| 模型 | 做法 | dpo_batch_size × grad_accum | 權重 | 梯度 + AdamW | activations | 訓練峰值 | 評估峰值 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, how, plan in plans:
        p, e = plan.estimate.parts, plan.estimate
        training_state = p["gradients"] + p["optimizer (AdamW)"] + p.get("LoRA adapters", 0)
        lines.append(
            f"| {name} | {how} | {plan.dpo_batch_size} × {plan.grad_accum} | {p['weights'] / GIB:.2f} |"
            f" {training_state / GIB:.2f} | {p['activations'] / GIB:.2f} | {e.train_peak / GIB:.1f} |"
            f" {e.eval_peak / GIB:.1f} |"
        )
    return "\n".join(lines)
