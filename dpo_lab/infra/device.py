"""Where the loops run and in what precision: CUDA when present (bf16 autocast), otherwise the CPU in fp32.

Device-agnostic by construction. bf16 autocast is never used on the CPU: on AVX2-only CPUs it is ~50x
slower and shifts the log-probs.
"""

from __future__ import annotations

import contextlib

import torch

from .manifest import library_versions


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA (weights stay fp32: the optimizer state keeps full precision); nothing elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def environment_report(config=None, device=None) -> str:
    """One line: device, dtype, profile and the versions that change the numbers (printed at the top of every
    notebook).
    """

    device = pick_device(device)
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)}), dtype bf16 autocast + fp32 weights"
    else:
        where = f"{device.type} ({torch.get_num_threads()} threads), dtype fp32"
    v = library_versions()
    versions = " ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "trl", "datasets", "dpo_lab") if v.get(k))
    profile = f"profile {config.profile} · " if config is not None else ""
    return f"{profile}device {where} · python {v['python']} · {versions}"
