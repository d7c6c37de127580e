"""Where and how the loops run: device, mixed precision, seeding, RNG state, dropout.

Device-agnostic by construction: CUDA when present (bf16 autocast), otherwise the CPU in fp32. bf16
autocast is never used on the CPU: on AVX2-only CPUs it is ~50x slower and shifts the log-probs.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA (weights stay fp32: the optimizer state keeps full precision); nothing elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG a loop touches, so a resumed run draws the same numbers as an uninterrupted one."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout p = 0 everywhere (as TRL does): the policy's and the reference's log-probs must be deterministic,
    otherwise the step-0 loss is not ln 2 and the implicit rewards are noise."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for name in ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout", "dropout"):
        if hasattr(model.config, name) and isinstance(getattr(model.config, name), float):
            setattr(model.config, name, 0.0)
    return model


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """The reference model: eval mode, no gradients, ever."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def quiet_hf() -> None:
    """Hide transformers' per-call progress bars and info warnings (notebook and CLI output stay readable)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


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


def environment_report(config=None, device=None) -> str:
    """One line: device, dtype, profile and the versions that change the numbers (printed at the top of every
    notebook).
    """
    from .manifest import library_versions

    device = pick_device(device)
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)}), dtype bf16 autocast + fp32 weights"
    else:
        where = f"{device.type} ({torch.get_num_threads()} threads), dtype fp32"
    v = library_versions()
    versions = " ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "trl", "datasets", "dpo_lab") if v.get(k))
    profile = f"profile {config.profile} · " if config is not None else ""
    return f"{profile}device {where} · python {v['python']} · {versions}"


PROGRESS_ENV = (
    "DPO_LAB_PROGRESS"  # "0" turns the loops' progress bars off (set by `python -m dpo_lab run` for its kernels)
)


def progress_bar(enabled: bool = True, **tqdm_kwargs):
    """A tqdm bar (a widget in Jupyter), or None when disabled by the caller or by ``DPO_LAB_PROGRESS=0``.

    Executed notebook copies would otherwise keep a frozen "0%" bar, since widget state is not saved.
    """
    if not enabled or os.environ.get(PROGRESS_ENV) == "0":
        return None
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, **tqdm_kwargs)
