"""Supervised fine-tuning (notebook 02): the SFT model is both DPO's reference and its starting policy.

A plain loop a student can read top to bottom: forward → loss on response tokens only → backward →
clip → AdamW step → schedule step; every ``eval_every`` steps the held-out loss and perplexity; the
weights with the lowest held-out loss are kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..core.collator import SFTDataCollator
from ..infra.checkpoints import resume_training, save_periodic_state
from ..infra.console import track
from ..infra.device import autocast, pick_device
from ..infra.distributed import distributed, is_main_process, mean_across_processes
from ..infra.precision import choose_precision
from ..infra.seeding import seed_everything
from .batching import batch_stream
from .loop_args import LoopArgs
from .optim import (
    TrainingDivergedError,
    build_optimizer,
    build_scheduler,
    disable_gradient_checkpointing,
    enable_gradient_checkpointing,
    optimizer_step,
    step_schedule,
)


@dataclass(kw_only=True)
class SFTArgs(LoopArgs):
    """The SFT loop's settings: exactly :class:`LoopArgs` (SFT needs nothing more)."""


@dataclass
class SFTResult:
    history: list[dict[str, Any]]
    best_step: int | None
    best_eval_loss: float | None
    args: dict[str, Any] = field(default_factory=dict)
    initial_eval: dict[str, float] = field(default_factory=dict)  # held-out loss before the first step


def check_finite(step: int, **values: torch.Tensor | float) -> None:
    """Stop at the first NaN/inf with a diagnosis instead of training on garbage."""
    for name, value in values.items():
        v = value.item() if torch.is_tensor(value) else value
        if not math.isfinite(v):
            raise TrainingDivergedError(
                f"{name} is {v} at step {step}. Try: a smaller learning rate; fp32 or bf16 instead of fp16"
                " (log_softmax in fp16 overflows); max_grad_norm=1.0; and check the batch for empty responses."
            )


@torch.no_grad()
def evaluate_lm_loss(
    model, examples: list[dict[str, Any]], collate, batch_size: int, device: torch.device, precision: str = "auto"
) -> dict[str, float]:
    """Token-weighted mean NLL of the response tokens and its perplexity, on held-out examples."""
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
        with autocast(device, precision):
            loss = model(**batch).loss
        n = int((batch["labels"][:, 1:] != -100).sum())
        total_nll += loss.float().item() * n
        total_tokens += n
    model.train(was_training)
    eval_loss = total_nll / max(total_tokens, 1)
    return {"eval_loss": eval_loss, "eval_perplexity": math.exp(min(eval_loss, 50.0))}


def sft_loss(model, batch: dict[str, torch.Tensor], logprobs_fn=None) -> torch.Tensor:
    """Mean NLL over the response tokens of an :class:`SFTDataCollator` batch.

    ``logprobs_fn=None``: the model's own ``loss`` (labels = -100 on prompt and padding). With a
    ``sequence_logprobs``-style function (a student's), the same number computed by it:
    ``-(sum of every row's response log-prob) / (number of scored tokens)``.
    """
    if logprobs_fn is None:
        return model(**batch).loss
    loss_mask = (batch["labels"] != -100).long()  # 1 on response tokens (EOS included)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return -logprobs_fn(logits, batch["input_ids"], loss_mask).sum() / loss_mask[:, 1:].sum().clamp(min=1)


def sft_train(
    model,
    tokenizer,
    train_examples: list[dict[str, Any]],
    eval_examples: list[dict[str, Any]],
    args: SFTArgs,
    *,
    device: str | torch.device | None = None,
    state_dir=None,
    logprobs_fn=None,
) -> SFTResult:
    """Train `model` in place on ``{"prompt_ids", "response_ids"}`` examples; leave it at its best weights.

    ``logprobs_fn``: train on the loss computed by this ``sequence_logprobs`` (a student's; see :func:`sft_loss`).

    ``state_dir``: where the periodic training state goes; if it already holds one, the run RESUMES
    from it (same batches, same RNG) and ends exactly where an uninterrupted run would.
    """
    accelerator = distributed()  # several processes (accelerate launch / torchrun): DDP; one process: None
    device = accelerator.device if accelerator is not None else pick_device(device)
    model.to(device).train()
    precision = choose_precision(device, args.precision)
    scaler = precision.grad_scaler()  # a no-op unless fp16
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    seed_everything(args.seed)
    collate = SFTDataCollator(tokenizer, max_length=args.max_length)
    optimizer = build_optimizer(model, args.lr, args.betas, args.weight_decay)
    scheduler = build_scheduler(optimizer, args.warmup_steps, args.steps, args.schedule)
    history: list[dict[str, Any]] = []
    best = {"loss": math.inf, "step": None, "weights": None}
    start_step = 0
    resumed = resume_training(state_dir, model=model, optimizer=optimizer, scheduler=scheduler)
    if resumed is not None:
        start_step, history, extra = resumed
        best = extra.get("best", best)
        if scaler.is_enabled() and extra.get("grad_scaler"):
            scaler.load_state_dict(extra["grad_scaler"])
    world, rank = (accelerator.num_processes, accelerator.process_index) if accelerator is not None else (1, 0)
    net = model  # what forward/backward go through: a DDP wrapper when distributed
    if accelerator is not None:
        net, optimizer = accelerator.prepare(model, optimizer)
    stream = batch_stream(
        train_examples, args.batch_plan(world), collate, start_batch=start_step * args.grad_accum * world, rank=rank
    )
    initial_eval, eval_seconds = {}, None  # one held-out evaluation, timed: the estimate counts those to come
    if resumed is None and eval_examples:
        t0 = time.perf_counter()
        initial_eval = evaluate_lm_loss(model, eval_examples, collate, args.batch_size, device, precision.name)
        eval_seconds = time.perf_counter() - t0
    progress = track(
        args.progress and is_main_process(accelerator),
        total=args.steps,
        initial=start_step,
        desc="SFT",
        eval_every=args.eval_every if eval_examples else None,
        eval_seconds=eval_seconds,
    )
    for step in range(start_step, args.steps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_sum, n_tokens = 0.0, 0
        for _ in range(args.grad_accum):
            batch = {k: v.to(device) for k, v in next(stream).items()}
            with precision.autocast():
                loss = sft_loss(net, batch, logprobs_fn)  # mean NLL over response tokens (labels = -100 elsewhere)
            scaler.scale(loss / args.grad_accum).backward()  # fp16: scaled so small gradients survive
            loss_sum += loss.detach().float().item()
            n_tokens += int(batch["attention_mask"].sum())
        check_finite(step + 1, loss=loss_sum)
        lr = scheduler.get_last_lr()[0]  # the rate THIS update uses
        grad_norm, stepped = optimizer_step(
            optimizer, [p for p in model.parameters() if p.requires_grad], args.max_grad_norm, scaler
        )
        if stepped:
            check_finite(step + 1, grad_norm=grad_norm)
        step_schedule(scheduler)
        row = {
            "step": step + 1,
            "loss": loss_sum / args.grad_accum,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens_per_s": world * n_tokens / (time.perf_counter() - t0),
            **({"grad_scale": scaler.get_scale(), "skipped_step": not stepped} if scaler.is_enabled() else {}),
        }
        row = mean_across_processes(accelerator, row)
        if eval_examples and ((step + 1) % args.eval_every == 0 or step + 1 == args.steps):
            row.update(evaluate_lm_loss(model, eval_examples, collate, args.batch_size, device, precision.name))
            if row["eval_loss"] < best["loss"]:
                best = {
                    "loss": row["eval_loss"],
                    "step": step + 1,
                    "weights": {  # what training can change (LoRA: the adapters), not a 4-bit base's packed weights
                        n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad
                    },
                }
        history.append(row)
        if progress is not None:
            progress.step(loss=row["loss"], **({"eval_loss": row["eval_loss"]} if "eval_loss" in row else {}))
        save_periodic_state(
            state_dir,
            step + 1,
            args.steps,
            args.save_every,
            accelerator,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            history=history,
            extra={"best": best, "grad_scaler": scaler.state_dict()},
        )
    if progress is not None:
        progress.close()
    if args.gradient_checkpointing:
        disable_gradient_checkpointing(model)  # the caller gets the model back as it came
    if best["weights"] is not None:
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in best["weights"].items():
                params[name].copy_(value)
    return SFTResult(
        history=history,
        best_step=best["step"],
        best_eval_loss=None if best["step"] is None else best["loss"],
        args={**asdict(args), "world_size": world, "precision_used": precision.label},
        initial_eval=initial_eval,
    )
