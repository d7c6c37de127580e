"""Optimizer and learning-rate schedule shared by the SFT and DPO loops."""

from __future__ import annotations

import torch


def build_optimizer(
    model: torch.nn.Module,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (LoRA: only the adapters). Fused kernels on CUDA."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False): nothing would learn")
    device = params[0].device
    return torch.optim.AdamW(
        params,
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        weight_decay=weight_decay,
        fused=True if device.type == "cuda" else None,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, kind: str = "cosine"):
    """Linear warmup, then cosine (or linear) decay to 0 — transformers' own schedules."""
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    raise ValueError(f"schedule must be 'cosine' or 'linear', not {kind!r}")
