"""Where the loops run: CUDA when present, otherwise the CPU. In what precision: :mod:`dpo_lab.infra.precision`.

Device-agnostic by construction. 16-bit autocast is never chosen on the CPU: on AVX2-only CPUs bf16 is
~50x slower and shifts the log-probs.
"""

from __future__ import annotations

import torch

from .manifest import library_versions
from .precision import choose_precision


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device | str, precision: str = "auto"):
    """The autocast context of :func:`dpo_lab.infra.precision.choose_precision` (nothing for fp32).

    Weights stay fp32 under autocast: the optimizer state keeps full precision.
    """
    return choose_precision(device, precision).autocast()


def environment_report(config=None, device=None) -> str:
    """One line: device, dtype, profile and the versions that change the numbers (printed at the top of every
    notebook).
    """

    device = pick_device(device)
    precision = choose_precision(device, getattr(config, "precision", "auto"))
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)}), dtype {precision.label}"
    else:
        where = f"{device.type} ({torch.get_num_threads()} threads), dtype {precision.label}"
    v = library_versions()
    versions = " ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "trl", "datasets", "dpo_lab") if v.get(k))
    profile = f"profile {config.profile} · " if config is not None else ""
    return f"{profile}device {where} · python {v['python']} · {versions}"
