"""What both training loops take: steps, optimizer, schedule, batching, evaluation and resume.

``SFTArgs`` and ``DPOArgs`` extend it with what only their loop needs; the run layer fills them from
:class:`dpo_lab.run.LabConfig` (``run.pipeline.sft_args`` / ``dpo_args``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..infra.precision import PRECISIONS


@dataclass(kw_only=True)
class LoopArgs:
    steps: int  # optimizer steps
    lr: float
    batch_size: int  # examples (SFT) or preference pairs (DPO) per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_steps: int = 0
    schedule: str = "cosine"  # or "linear"; both decay to 0 after the warm-up
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 50  # steps between held-out evaluations
    save_every: int = 0  # steps between resumable training states (0 = only at the end)
    seed: int = 0
    max_length: int | None = None
    bucket: bool = True  # batch sequences of similar length together (less padding)
    progress: bool = True
    precision: str = "auto"  # fp32 / bf16 / fp16 / auto (by device: dpo_lab.infra.precision.choose_precision)
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward: less memory, slower

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(
                f"steps, batch_size and grad_accum must all be >= 1, got {self.steps}, {self.batch_size},"
                f" {self.grad_accum}"
            )
