"""Peak memory of this process, measured the same way wherever it is asked: CUDA's allocator counters on a GPU,
the resident set's high-water mark (Linux ``VmHWM``) on the CPU.

Used by the benchmarks and the GPU self-check to put a measured number beside the planner's estimate
(:mod:`dpo_lab.run.memory`).
"""

from __future__ import annotations

import torch


def rss_mb(field: str = "VmRSS") -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB, from ``/proc/self/status`` (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def reset_peak(device: torch.device | str = "cpu") -> None:
    """Restart the peak from now: ``torch.cuda.reset_peak_memory_stats`` or VmHWM := VmRSS (Linux >= 4.0)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def current_bytes(device: torch.device | str = "cpu") -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.memory_allocated(device)
    return int(rss_mb("VmRSS") * 2**20)


def peak_bytes(device: torch.device | str = "cpu") -> int:
    """The peak since the last :func:`reset_peak`: ``torch.cuda.max_memory_allocated`` or VmHWM."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return int(rss_mb("VmHWM") * 2**20)
