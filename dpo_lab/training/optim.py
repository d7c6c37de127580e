"""Optimizer, learning-rate schedule and the optimizer step (with fp16's gradient scaler) shared by both loops."""

from __future__ import annotations

import warnings

import torch


class TrainingDivergedError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message says where, when, and what to try."""


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


def optimizer_step(optimizer, params, max_grad_norm: float, scaler: torch.amp.GradScaler) -> tuple[float, bool]:
    """Unscale (fp16), clip the gradient norm, step; return ``(grad_norm, stepped)``.

    With fp16's scaler an inf/NaN gradient is expected now and then: the step is skipped and the scale
    halved (``stepped`` False). A disabled scaler (fp32, bf16) always steps; a non-finite norm there is
    divergence, which the caller reports.
    """
    scaler.unscale_(optimizer)  # no-op when disabled: the gradients are then already the real ones
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    stepped = before is None or scaler.get_scale() >= before
    if scaler.is_enabled() and scaler.get_scale() < 1.0:
        raise TrainingDivergedError(
            f"fp16 gradients overflow even unscaled (scale {scaler.get_scale():g}): the run diverged, or fp16's"
            " range is too small for it. Lower the learning rate, or train with precision='fp32'."
        )
    return float(grad_norm), stepped


def step_schedule(scheduler) -> None:
    """``scheduler.step()``, without torch's warning that the optimizer did not step first: with fp16's scaler a
    skipped step is expected, and the schedule still advances (as transformers' Trainer does)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()


def enable_gradient_checkpointing(model) -> None:
    """Recompute each transformer layer's activations in the backward pass instead of storing them.

    Non-reentrant checkpointing: exact same gradients, works with frozen inputs (LoRA) and autocast.
    """
    if not getattr(model, "supports_gradient_checkpointing", False) and not hasattr(model, "get_base_model"):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
    model.activation_checkpointing_enable({"use_reentrant": False})  # transformers' name for it since v5


def disable_gradient_checkpointing(model) -> None:
    """Undo :func:`enable_gradient_checkpointing` (a loop hands the model back as it came)."""
    model.activation_checkpointing_disable()
