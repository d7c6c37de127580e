"""The training precision, decided once per device so every part of the lab agrees on it.

=====================  ======================================  ==========================================
device                 precision                               why
=====================  ======================================  ==========================================
CUDA, capability ≥ 8.0 bf16 autocast (A100, H100, RTX 30/40,   native bf16 tensor cores; bf16 has fp32's
                       A4000 …)                                exponent range, so no loss scaling
CUDA, capability < 8.0 fp16 autocast + gradient scaler         no native bf16 (emulated, slow); fp16 has a
                       (T4, V100)                              small range: the scaler keeps small
                                                               gradients from flushing to zero
CPU, MPS               fp32                                    CPU bf16/fp16 autocast is slow on common
                                                               CPUs and shifts the log-probs
=====================  ======================================  ==========================================

Under autocast the weights and the optimizer state stay fp32; only matmuls run in 16 bits. The
log-softmax and the log-prob sums are fp32 whatever the policy (:mod:`dpo_lab.core.losses`). The choice
can be overridden (``precision="fp32"`` in the config); an explicit 16-bit choice on a device without it
natively is allowed (tests run fp16 on the CPU) and its reason says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere


@dataclass(frozen=True)
class Precision:
    """One precision policy: what autocast runs, whether a gradient scaler is needed, and how it is labelled."""

    name: str  # "fp32" | "bf16" | "fp16"
    device_type: str  # "cuda" | "cpu" | "mps" ...
    reason: str  # why it was chosen (printed by doctor and the environment report)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.name == "fp32" else _DTYPES[self.name]

    @property
    def uses_scaler(self) -> bool:
        """fp16 only: its largest finite value is 65504 and its smallest normal 6e-5, so gradients need scaling."""
        return self.name == "fp16"

    def autocast(self):
        """The context the forward passes run in (nothing for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is a no-op unless fp16 (``scale(loss)`` returns ``loss``, ``step`` just steps)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.uses_scaler)

    @property
    def label(self) -> str:
        """Human-readable: ``bf16 autocast + fp32 weights``."""
        if self.name == "fp32":
            return "fp32"
        return f"{self.name} autocast" + (" + GradScaler" if self.uses_scaler else "") + " + fp32 weights"

    @property
    def cache_tag(self) -> str:
        """What the reference log-prob cache's key records: numbers from another precision are not reused."""
        return "fp32" if self.name == "fp32" else f"{self.name}-autocast"

    @property
    def logits_atol(self) -> float:
        """How far two computations of the same logits may differ in this precision (bf16 has 8 mantissa bits,
        fp16 11, fp32 24)."""
        return {"fp32": 1e-3, "fp16": 1e-2, "bf16": 3e-2}[self.name]

    def trl_flags(self) -> dict[str, bool]:
        """The matching ``bf16`` / ``fp16`` arguments of transformers' TrainingArguments (TRL's DPOConfig)."""
        return {"bf16": self.name == "bf16", "fp16": self.name == "fp16"}


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA compute capability (major, minor), or None off CUDA."""
    if device.type != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(device))


def choose_precision(
    device: str | torch.device,
    requested: str = "auto",
    capability: tuple[int, int] | None = None,
) -> Precision:
    """The precision for ``device``: ``requested`` when not "auto", else by device and compute capability.

    ``capability`` replaces the device's own (tests mock a T4 with ``(7, 5)``).

    >>> choose_precision("cuda", capability=(7, 5)).label
    'fp16 autocast + GradScaler + fp32 weights'
    >>> choose_precision("cuda", capability=(8, 9)).name, choose_precision("cpu").name
    ('bf16', 'fp32')
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    device = torch.device(device)
    if device.type == "cuda" and capability is None:
        capability = device_capability(device)
    cc = f"compute capability {capability[0]}.{capability[1]}" if capability else ""
    native_bf16 = capability is not None and tuple(capability) >= NATIVE_BF16_CAPABILITY
    if requested == "auto":
        if device.type != "cuda":
            where = "CPU" if device.type == "cpu" else device.type.upper()
            return Precision("fp32", device.type, f"{where} 上的 16 位元 autocast 慢且會改變 log-prob")
        if native_bf16:
            return Precision("bf16", "cuda", f"{cc} ≥ 8.0：原生 bf16，範圍與 fp32 相同，不需要 loss scaling")
        return Precision("fp16", "cuda", f"{cc} < 8.0（如 T4、V100）：沒有原生 bf16，改用 fp16 autocast + GradScaler")
    reason = f"設定指定 precision={requested}"
    if requested == "bf16" and device.type == "cuda" and not native_bf16:
        reason += f"（{cc} 沒有原生 bf16：以模擬執行，會很慢）"
    elif requested != "fp32" and device.type != "cuda":
        reason += f"（{device.type} 上的 16 位元 autocast 通常比 fp32 慢）"
    return Precision(requested, device.type, reason)
