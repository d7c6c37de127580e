"""What both training loops take: steps, optimizer, schedule, batching, evaluation and resume.

``SFTArgs`` and ``DPOArgs`` extend it with what only their loop needs; the run layer fills them from
:class:`dpo_lab.run.LabConfig` (``run.pipeline.sft_args`` / ``dpo_args``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..infra.precision import PRECISIONS
from .batching import BatchPlan


@dataclass(kw_only=True)
class LoopArgs:
    """The fields without a default are the lab's settings: their one default lives in
    :class:`dpo_lab.run.LabConfig` (``run.pipeline.sft_args`` / ``dpo_args`` fill them). The loop's own
    knobs, which no profile changes, keep theirs here."""

    # --- set from LabConfig (no default here: a second default could disagree with the profile's) ---
    steps: int  # optimizer steps
    lr: float
    batch_size: int  # examples (SFT) or preference pairs (DPO) per micro-batch
    grad_accum: int  # micro-batches per optimizer step
    warmup_steps: int
    schedule: str  # "cosine" or "linear"; both decay to 0 after the warm-up
    betas: tuple[float, float]  # AdamW's
    eval_every: int  # steps between held-out evaluations
    save_every: int  # steps between resumable training states (0 = only at the end)
    seed: int
    max_length: int | None
    precision: str  # fp32 / bf16 / fp16 / auto (by device: dpo_lab.infra.precision.choose_precision)
    gradient_checkpointing: bool  # recompute each layer's activations in backward: less memory, slower
    # --- the loop's own ---
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    shuffle: bool = True
    bucket: bool = True  # batch sequences of similar length together (less padding)
    progress: bool = True

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

    def batch_plan(self, world: int = 1) -> BatchPlan:
        """The order in which this loop visits its examples (over ``world`` processes)."""
        return BatchPlan(self.batch_size, self.seed, shuffle=self.shuffle, bucket=self.bucket, world=world)

    def visited(self, examples: list, world: int = 1) -> list[int]:
        """The indices of ``examples`` a full run of this loop trains on, in the order it first meets them."""
        return self.batch_plan(world).first_visits(examples, self.steps * self.grad_accum * world)
