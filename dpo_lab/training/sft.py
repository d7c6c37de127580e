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
from ..infra.device import autocast
from ..infra.distributed import mean_across_processes
from .loop_args import LoopArgs
from .optim import (
    TrainingDivergedError,
    optimizer_step,
    step_schedule,
)
from .session import Session


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
    session = Session.open(model, args, device, state_dir)
    model.train()
    device, precision = session.device, session.precision
    collate = SFTDataCollator(tokenizer, max_length=args.max_length)
    best = (session.extra or {}).get("best", {"loss": math.inf, "step": None, "weights": None})
    net = session.distribute(model)  # what forward/backward go through: a DDP wrapper when distributed
    stream = session.stream(train_examples, collate)
    initial_eval, eval_seconds = {}, None  # one held-out evaluation, timed: the estimate counts those to come
    if not session.resumed and eval_examples:
        t0 = time.perf_counter()
        initial_eval = evaluate_lm_loss(model, eval_examples, collate, args.batch_size, device, precision.name)
        eval_seconds = time.perf_counter() - t0
    progress = session.progress("SFT", evaluates=bool(eval_examples), eval_seconds=eval_seconds)
    for step in range(session.start_step + 1, args.steps + 1):
        row = sft_step(session, net, [next(stream) for _ in range(args.grad_accum)], step, logprobs_fn)
        if eval_examples and session.evaluates_after(step):
            row.update(evaluate_lm_loss(model, eval_examples, collate, args.batch_size, device, precision.name))
            best = _keep_if_best(best, row, model)
        session.history.append(row)
        if progress is not None:
            progress.step(loss=row["loss"], **({"eval_loss": row["eval_loss"]} if "eval_loss" in row else {}))
        session.save(step, {"best": best})
    if progress is not None:
        progress.close()
    session.close()
    if best["weights"] is not None:
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in best["weights"].items():
                params[name].copy_(value)
    return SFTResult(
        history=session.history,
        best_step=best["step"],
        best_eval_loss=None if best["step"] is None else best["loss"],
        args={**asdict(args), "world_size": session.world, "precision_used": precision.label},
        initial_eval=initial_eval,
    )


def sft_step(session: Session, net, micro_batches: list[dict[str, torch.Tensor]], step: int, logprobs_fn=None):
    """One SFT optimizer step over accumulated micro-batches: the mean response-token NLL, backward (scaled in
    fp16), clip, step, schedule. Returns the history row."""
    t0 = time.perf_counter()
    optimizer, scaler, device = session.optimizer, session.scaler, session.device
    optimizer.zero_grad(set_to_none=True)
    loss_sum, n_tokens = 0.0, 0
    for micro in micro_batches:
        batch = {k: v.to(device) for k, v in micro.items()}
        with session.precision.autocast():
            loss = sft_loss(net, batch, logprobs_fn)  # mean NLL over response tokens (labels = -100 elsewhere)
        scaler.scale(loss / len(micro_batches)).backward()  # fp16: scaled so small gradients survive
        loss_sum += loss.detach().float().item()
        n_tokens += int(batch["attention_mask"].sum())
    check_finite(step, loss=loss_sum)
    lr = session.scheduler.get_last_lr()[0]  # the rate THIS update uses
    trainable = [p for p in session.model.parameters() if p.requires_grad]
    grad_norm, stepped = optimizer_step(optimizer, trainable, session.args.max_grad_norm, scaler)
    if stepped:
        check_finite(step, grad_norm=grad_norm)
    step_schedule(session.scheduler)
    row = {
        "step": step,
        "loss": loss_sum / len(micro_batches),
        "lr": lr,
        "grad_norm": float(grad_norm),
        "tokens_per_s": session.world * n_tokens / (time.perf_counter() - t0),
        **({"grad_scale": scaler.get_scale(), "skipped_step": not stepped} if scaler.is_enabled() else {}),
    }
    return mean_across_processes(session.accelerator, row)


def _keep_if_best(best: dict[str, Any], row: dict[str, Any], model) -> dict[str, Any]:
    """The best held-out loss so far, with a copy of what training can change (LoRA: the adapters, not a 4-bit
    base's packed weights)."""
    if not row["eval_loss"] < best["loss"]:  # NaN is never the best
        return best
    weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {"loss": row["eval_loss"], "step": row["step"], "weights": weights}
