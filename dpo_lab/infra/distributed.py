"""Several processes (``accelerate launch`` on GPUs, ``torchrun`` anywhere) or one: the loops run unchanged."""

from __future__ import annotations

import os

import torch


def distributed():
    """An ``accelerate.Accelerator`` when several processes were started (``accelerate launch`` on GPUs,
    ``torchrun`` anywhere), else None: one process needs no launcher and runs the plain loop."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())  # on CPUs: DDP over gloo


def is_main_process(accelerator) -> bool:
    return accelerator is None or accelerator.is_main_process


def mean_across_processes(accelerator, row: dict) -> dict:
    """Average a row of float metrics over all processes (each saw different batches)."""
    if accelerator is None:
        return row
    keys = [k for k, v in row.items() if isinstance(v, float)]
    values = accelerator.reduce(
        torch.tensor([row[k] for k in keys], dtype=torch.float64, device=accelerator.device), "mean"
    )
    return {**row, **dict(zip(keys, values.tolist()))}
