"""What both training loops share around their own step: device, precision, optimizer, schedule, resume, the
batch stream, progress and the periodic saves.

A loop opens a :class:`Session`, runs its step (SFT: :func:`dpo_lab.training.sft.sft_train`; DPO:
:class:`dpo_lab.training.dpo.DPOLoop`) from ``session.start_step`` to ``args.steps``, and closes it. The order of
what :meth:`Session.open` does is part of the result: the seed is set before the optimizer exists and the resumed
state (weights, optimizer, schedule, RNG) is restored after, so a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..infra.checkpoints import resume_training, save_periodic_state
from ..infra.console import track
from ..infra.device import pick_device
from ..infra.distributed import distributed, is_main_process
from ..infra.precision import Precision, choose_precision
from ..infra.seeding import seed_everything
from .batching import batch_stream
from .loop_args import LoopArgs
from .optim import build_optimizer, build_scheduler, disable_gradient_checkpointing, enable_gradient_checkpointing


@dataclass
class Session:
    """One training run's shared machinery; ``extra`` is what the loop saved with its last state (None: fresh)."""

    args: LoopArgs
    model: torch.nn.Module
    device: torch.device
    precision: Precision
    scaler: torch.amp.GradScaler
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    state_dir: Any
    start_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] | None = None

    @classmethod
    def open(cls, model, args: LoopArgs, device=None, state_dir=None) -> Session:
        """Move ``model`` to the device, pick the precision, seed, build optimizer and schedule, resume if a state
        was saved in ``state_dir``."""
        accelerator = distributed()  # several processes (accelerate launch / torchrun): DDP; one process: None
        device = accelerator.device if accelerator is not None else pick_device(device)
        model.to(device)
        precision = choose_precision(device, args.precision)
        if args.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        seed_everything(args.seed)
        optimizer = build_optimizer(model, args.lr, args.betas, args.weight_decay)
        scheduler = build_scheduler(optimizer, args.warmup_steps, args.steps, args.schedule)
        session = cls(
            args, model, device, precision, precision.grad_scaler(), optimizer, scheduler, accelerator, state_dir
        )
        resumed = resume_training(state_dir, model=model, optimizer=optimizer, scheduler=scheduler)
        if resumed is not None:
            session.start_step, session.history, session.extra = resumed
            if session.scaler.is_enabled() and session.extra.get("grad_scaler"):
                session.scaler.load_state_dict(session.extra["grad_scaler"])
        return session

    @property
    def resumed(self) -> bool:
        return self.extra is not None

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def is_main(self) -> bool:
        return is_main_process(self.accelerator)

    def distribute(self, net):
        """``net`` wrapped for several processes (gradients averaged across them), or ``net`` itself."""
        if self.accelerator is None:
            return net
        net, self.optimizer = self.accelerator.prepare(net, self.optimizer)
        return net

    def stream(self, examples: list[dict[str, Any]], collate):
        """This process's collated micro-batches in the loop's plan, from where a resumed run stopped."""
        start = self.start_step * self.args.grad_accum * self.world
        return batch_stream(examples, self.args.batch_plan(self.world), collate, start_batch=start, rank=self.rank)

    def progress(self, desc: str, *, evaluates: bool, eval_seconds: float | None):
        """The progress bar (None when ``progress=False`` or on a process other than the main one)."""
        return track(
            self.args.progress and self.is_main,
            total=self.args.steps,
            initial=self.start_step,
            desc=desc,
            eval_every=self.args.eval_every if evaluates else None,
            eval_seconds=eval_seconds,
        )

    def evaluates_after(self, step: int) -> bool:
        """Whether the held-out evaluation runs after optimizer step ``step`` (every ``eval_every``, and the last)."""
        return step % self.args.eval_every == 0 or step == self.args.steps

    def save(self, step: int, extra: dict[str, Any]) -> None:
        """The periodic resumable state (every ``save_every`` steps), with the loop's ``extra`` and the scaler."""
        save_periodic_state(
            self.state_dir,
            step,
            self.args.steps,
            self.args.save_every,
            self.accelerator,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            history=self.history,
            extra={**extra, "grad_scaler": self.scaler.state_dict()},
        )

    def close(self) -> None:
        """Hand the model back as it came (gradient checkpointing off)."""
        if self.args.gradient_checkpointing:
            disable_gradient_checkpointing(self.model)
