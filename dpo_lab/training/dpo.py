"""DPO training (notebook 03), hand-written on the package's own pieces.

One training step, as the course describes it::

    batch  = collate(pairs)                          # [chosen rows; rejected rows], one forward
    pc, pr = batch_logprobs(policy, batch)           # log π_θ(y|x), summed over response tokens
    rc, rr = reference log-probs (cache or frozen model, no gradients)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta)
    losses.mean().backward(); clip; optimizer.step(); scheduler.step()

Everything else here is monitoring: the metrics TRL logs, a held-out evaluation with a KL estimate,
early stopping with the reason written down, and a diagnosis when something becomes NaN.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..core.collator import PreferenceDataCollator, merge_pair_batches
from ..core.losses import LOSSES, check_beta, check_loss_type, dpo_loss, dpo_metrics, preference_loss, token_kl
from ..core.model_modes import disable_dropout, freeze
from ..fast.scored_logprobs import batch_logprobs, plain_causal_lm, reference_logprobs, sequence_logprobs_lean
from ..infra.distributed import mean_across_processes
from ..infra.precision import Precision, choose_precision
from .loop_args import LoopArgs
from .optim import (
    TrainingDivergedError,
    optimizer_step,
    step_schedule,
)
from .session import Session


@dataclass(kw_only=True)
class DPOArgs(LoopArgs):
    """The DPO loop's settings: :class:`LoopArgs` plus beta, log-prob averaging and the stopping rules."""

    # --- set from LabConfig ---
    beta: float
    average_logps: bool  # True = length-normalised log-probs (shrinks the effective beta)
    loss_type: str  # a name in dpo_lab.core.losses.LOSSES
    label_smoothing: float
    # early stopping and the course's over-optimisation rules
    patience: int  # early stopping: stop after this many evaluations without a lower held-out loss (0 = off)
    kl_limit: float | None  # held-out KL above this = over-optimisation
    train_accuracy_limit: float | None  # moving-average train accuracy above this = overfitting preferences
    # --- the loop's own ---
    accuracy_window: int = 20
    compile: bool = False  # CUDA only: torch.compile the policy's transformer body (unverified here: no GPU)

    def __post_init__(self):
        check_beta(self.beta)
        check_loss_type(self.loss_type, self.label_smoothing)
        if LOSSES[self.loss_type].average_logps and not self.average_logps:
            raise ValueError(
                f"loss_type={self.loss_type!r} is defined on length-averaged log-probs (as TRL): set average_logps=True"
            )
        super().__post_init__()


def score_pairs(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_fn=dpo_loss,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Log-probs → per-pair losses → TRL's metrics: the middle of every DPO step, shared by :func:`dpo_step`,
    the loop's training step and its held-out evaluation (only where the log-probs come from differs)."""
    losses, chosen_rewards, rejected_rewards = loss_fn(
        policy_chosen, policy_rejected, ref_chosen.to(policy_chosen.dtype), ref_rejected.to(policy_chosen.dtype), beta
    )
    return losses, dpo_metrics(policy_chosen, policy_rejected, chosen_rewards, rejected_rewards, losses)


def dpo_step(
    policy, reference, batch: dict[str, torch.Tensor], optimizer, beta: float, max_grad_norm: float = 1.0
) -> dict[str, float]:
    """ONE DPO optimizer step on one collated batch: the heart of notebook 03, without the bookkeeping.

    ``batch`` is a :class:`dpo_lab.PreferenceDataCollator` output (``[chosen rows; rejected rows]``);
    ``reference`` a separate frozen model. Steps: policy log-probs (with gradients) → reference
    log-probs (no gradients) → per-pair DPO losses → mean → backward → clip the gradient norm →
    optimizer step. Returns :func:`dpo_lab.dpo_metrics` plus ``grad_norm``. Dropout should be off on
    both models (:func:`dpo_lab.core.model_modes.disable_dropout`), or the step-0 loss is not ln 2.
    """
    if reference is policy:
        raise ValueError(
            "the reference must be a separate frozen copy, not the policy module itself (the loss would stay ln 2)"
        )
    policy.train()
    optimizer.zero_grad(set_to_none=True)
    policy_chosen, policy_rejected = batch_logprobs(policy, batch)
    ref_chosen, ref_rejected = reference_logprobs(reference, batch)
    losses, metrics = score_pairs(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    losses.mean().backward()
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    return {**metrics, "grad_norm": float(grad_norm)}


class DPOLoop:
    """Holds the policy, the frozen reference and beta; computes the loss and runs optimizer steps.

    The reference can be a separate frozen model, the policy itself with its LoRA adapters switched
    off (``reference=None`` on a peft model), or absent when every batch carries cached reference
    log-probs (``ref_chosen_logps`` / ``ref_rejected_logps``).
    """

    def __init__(
        self,
        policy,
        reference=None,
        *,
        beta: float,
        average_logps: bool = False,
        ref_lm_head: dict | None = None,
        loss_fn=dpo_loss,
        step_fn=None,
        precision: Precision | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ):
        """``precision``: the autocast and gradient scaling of every forward/step (None: chosen from the device);
        ``scaler``: its fp16 gradient scaler when the caller keeps one (a resumable run's).
        ``loss_fn``: the DPO loss used for training and held-out evaluation (a student's ``dpo_loss``).
                ``step_fn``: when given, every optimizer step IS ``step_fn(policy, reference, batch, optimizer,
                beta, max_grad_norm)`` (a student's ``dpo_step``), on the micro-batches merged into one batch;
                it needs a live reference model. The learning-rate schedule still steps after it.
        """
        if reference is not None and reference is policy:
            raise ValueError(
                "the reference must be a separate frozen copy, not the policy module itself (the loss would stay ln 2)"
            )
        self.policy = disable_dropout(policy)  # what forward/backward go through (a DDP wrapper when distributed)
        self.unwrapped = policy  # the model itself (LoRA adapters are switched off here)
        self.reference = freeze(disable_dropout(reference)) if reference is not None else None
        self.beta = beta
        self.average_logps = average_logps
        self.ref_lm_head = ref_lm_head  # from the cache: reference logits = hidden @ W.T (+ b) for the KL
        self.loss_fn = loss_fn
        self.step_fn = step_fn
        self.precision = precision
        self.scaler = scaler if scaler is not None else (precision.grad_scaler() if precision is not None else None)
        if step_fn is not None and self.reference is None:
            raise ValueError("a dpo_step function needs a live reference model (not cached log-probs or LoRA adapters)")

    def _autocast(self, device):
        return (self.precision or choose_precision(device)).autocast()

    # ---------------------------------------------------------------- reference side
    def _uses_adapters_as_reference(self) -> bool:
        return self.reference is None and hasattr(self.unwrapped, "disable_adapter")

    def reference_side_logps(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        with torch.inference_mode():  # no graph, no version counters: the reference is only ever read
            if self._uses_adapters_as_reference():
                with self.unwrapped.disable_adapter():
                    return batch_logprobs(self.unwrapped, batch, average=self.average_logps)
            if self.reference is None:
                raise ValueError("no reference: pass a reference model, use LoRA, or attach cached reference log-probs")
            return batch_logprobs(self.reference, batch, average=self.average_logps)

    # ---------------------------------------------------------------- the loss
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean DPO loss of a collated batch and its metrics (TRL's names): :func:`dpo_step`'s first half, with the
        reference side from the cache, the model or the adapters-off policy."""
        pc, pr = batch_logprobs(self.policy, batch, average=self.average_logps)
        rc, rr = self.reference_side_logps(batch)
        losses, metrics = score_pairs(pc, pr, rc, rr, self.beta, self.loss_fn)
        return losses.mean(), metrics

    def train_step(
        self,
        micro_batches: list[dict[str, torch.Tensor]],
        optimizer,
        scheduler,
        max_grad_norm: float,
        step: int,
        device: torch.device,
    ) -> dict[str, float]:
        """One optimizer step over ``len(micro_batches)`` accumulated micro-batches.

        Rows carry TRL's metric names plus ``logratios/margins``: the margin in nats (the reward margin
        divided by beta), the unit in which runs with different betas can be compared.
        """
        if self.step_fn is not None:
            return self._train_step_with(micro_batches, optimizer, scheduler, max_grad_norm, step, device)
        if self.scaler is None:
            self.precision = self.precision or choose_precision(device)
            self.scaler = self.precision.grad_scaler()
        self.policy.train()
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        n_tokens = 0
        for micro in micro_batches:
            batch = {k: v.to(device) for k, v in micro.items()}
            with self.precision.autocast():
                loss, metrics = self.compute_loss(batch)
            _diagnose(step, loss, metrics)
            self.scaler.scale(loss / len(micro_batches)).backward()  # fp16: scaled so small gradients survive
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value / len(micro_batches)
            n_tokens += int(batch["attention_mask"].sum())
        lr = scheduler.get_last_lr()[0]  # the rate THIS update uses
        grad_norm, stepped = optimizer_step(
            optimizer, [p for p in self.policy.parameters() if p.requires_grad], max_grad_norm, self.scaler
        )
        if stepped:  # fp16: an overflowing step was skipped and the scale lowered, as designed
            _check_grad_norm(step, grad_norm)
        step_schedule(scheduler)
        return {
            **sums,
            "logratios/margins": sums["rewards/margins"] / self.beta,
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": n_tokens,
            **(
                {"grad_scale": self.scaler.get_scale(), "skipped_step": not stepped} if self.scaler.is_enabled() else {}
            ),
        }

    def _train_step_with(
        self, micro_batches, optimizer, scheduler, max_grad_norm: float, step: int, device
    ) -> dict[str, float]:
        """The optimizer step done by ``step_fn`` (the student's ``dpo_step``) on the merged micro-batches.

        It runs under the loop's autocast, except fp16: a ``dpo_step`` has no gradient scaler, and unscaled
        fp16 gradients underflow, so on those GPUs it runs in fp32 (:meth:`step_fn_precision`).
        """
        batch = {k: v.to(device) for k, v in merge_pair_batches(micro_batches).items()}
        lr = scheduler.get_last_lr()[0]
        with self.step_fn_precision(device).autocast():
            metrics = self.step_fn(self.policy, self.reference, batch, optimizer, self.beta, max_grad_norm)
        metrics = {k: float(v) for k, v in metrics.items()}
        _diagnose(step, torch.tensor(metrics["loss"]), metrics)
        _check_grad_norm(step, metrics["grad_norm"])
        step_schedule(scheduler)
        return {
            **metrics,
            "logratios/margins": metrics["rewards/margins"] / self.beta,
            "lr": lr,
            "tokens": int(batch["attention_mask"].sum()),
        }

    def step_fn_precision(self, device) -> Precision:
        """The precision a ``step_fn`` runs in: the loop's, or fp32 where the loop's needs a gradient scaler."""
        chosen = self.precision or choose_precision(device)
        if chosen.uses_scaler:
            return Precision("fp32", chosen.device_type, "dpo_step 沒有 GradScaler：fp16 的梯度會下溢，改用 fp32")
        return chosen

    # ---------------------------------------------------------------- held-out evaluation
    @torch.no_grad()
    def evaluate(
        self, batches: list[dict[str, torch.Tensor]], device: torch.device, ref_hidden: list[torch.Tensor] | None = None
    ) -> dict[str, float]:
        """Held-out loss/rewards/accuracy and the teacher-forced KL(policy ‖ reference) on chosen responses.

        KL per pair = sum over the chosen response's positions of KL between the next-token
        distributions; reported as the mean over pairs (nats).
        """
        self.policy.eval()
        totals: dict[str, float] = {}
        kls: list[float] = []
        n_pairs, hidden_at = 0, 0
        for micro in batches:
            batch = {k: v.to(device) for k, v in micro.items()}
            with self._autocast(device):
                outputs = self.policy(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                )
                logps = sequence_logprobs_lean(
                    outputs.logits, batch["input_ids"], batch["loss_mask"], average=self.average_logps
                )
            pc, pr = logps.chunk(2)
            b = pc.shape[0]
            live = self._live_reference_logits(batch, device) if "ref_chosen_logps" not in batch else None
            if live is not None:  # the very same computation as the policy's: at step 0 the rewards are exactly 0
                rc, rr = sequence_logprobs_lean(
                    live, batch["input_ids"], batch["loss_mask"], average=self.average_logps
                ).chunk(2)
                mask = batch["loss_mask"][:b, 1:].bool()
                ref_logits = [live[i, :-1][mask[i]] for i in range(b)]
            else:
                rc, rr = self.reference_side_logps(batch)
                ref_logits = self._reference_logits(
                    batch, b, ref_hidden[hidden_at : hidden_at + b] if ref_hidden else None, device
                )
            hidden_at += b
            _, metrics = score_pairs(pc, pr, rc, rr, self.beta, self.loss_fn)
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value * b
            n_pairs += b
            if ref_logits is not None:
                mask = batch["loss_mask"][:b, 1:].bool()
                pol = outputs.logits[:b, :-1]
                for i in range(b):
                    kls.append(token_kl(pol[i][mask[i]], ref_logits[i]).sum().item())
        out = {f"eval_{k}": v / n_pairs for k, v in totals.items()}
        out["eval_logratios/margins"] = out["eval_rewards/margins"] / self.beta  # nats: comparable across betas
        if kls:
            out["eval_kl"] = sum(kls) / len(kls)
        return out

    def _live_reference_logits(self, batch, device) -> torch.Tensor | None:
        """Full reference logits of every row, from the reference model or the adapters-off policy (None if neither)."""
        if self.reference is not None:
            with self._autocast(device):
                return self.reference(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                ).logits
        if self._uses_adapters_as_reference():
            with self.unwrapped.disable_adapter(), self._autocast(device):
                return self.unwrapped(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                ).logits
        return None

    def _reference_logits(self, batch, b: int, hidden: list[torch.Tensor] | None, device) -> list[torch.Tensor] | None:
        """Reference logits at each chosen row's scored positions: from the model, the adapters-off policy, or the
        cache.
        """
        mask = batch["loss_mask"][:b, 1:].bool()
        if hidden is not None and self.ref_lm_head is not None:
            w = self.ref_lm_head["weight"].to(device)
            bias = self.ref_lm_head["bias"]
            return [h.to(device) @ w.T + (bias.to(device) if bias is not None else 0) for h in hidden]
        model = self.reference
        if model is None and self._uses_adapters_as_reference():
            with self.unwrapped.disable_adapter(), self._autocast(device):
                logits = self.unwrapped(
                    input_ids=batch["input_ids"][:b], attention_mask=batch["attention_mask"][:b], use_cache=False
                ).logits
        elif model is not None:
            with self._autocast(device):
                logits = model(
                    input_ids=batch["input_ids"][:b], attention_mask=batch["attention_mask"][:b], use_cache=False
                ).logits
        else:
            return None
        return [logits[i, :-1][mask[i]] for i in range(b)]


def _check_grad_norm(step: int, grad_norm) -> None:
    if not math.isfinite(float(grad_norm)):
        raise TrainingDivergedError(
            f"grad_norm is {float(grad_norm)} at step {step} although the loss was finite: lower the learning rate,"
            " keep max_grad_norm=1.0, and train in fp32/bf16, not fp16."
        )


def _diagnose(step: int, loss: torch.Tensor, metrics: dict[str, float]) -> None:
    """Name the first non-finite quantity and say what usually causes it."""
    if math.isfinite(loss.item()):
        return
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    hint = (
        "policy log-probs are not finite: log_softmax ran in fp16/bf16, or a response has no scored token"
        if any(k.startswith("logps/") for k in bad)
        else "the rewards overflowed: the learning rate or beta is too large, or the reference log-probs are wrong"
    )
    raise TrainingDivergedError(
        f"DPO loss is {loss.item()} at step {step}; non-finite: {bad or ['loss']}. Likely: {hint}."
        " Try a smaller learning rate, max_grad_norm=1.0, fp32 on CPU / bf16 on GPU."
    )


_HELD_OUT_SHOWN = {"eval_loss": "eval_loss", "eval_rewards/accuracies": "eval_acc", "eval_kl": "eval_kl"}  # on the bar


def _show(progress, row: dict[str, Any]) -> None:
    """A step's numbers on the progress bar (train loss, margin, accuracy; the held-out ones when evaluated)."""
    if progress is not None:
        shown = {"loss": row["loss"], "margin": row["rewards/margins"], "acc": row["rewards/accuracies"]}
        shown.update({short: row[key] for key, short in _HELD_OUT_SHOWN.items() if key in row})
        progress.step(**shown)


def _open_loop(session: Session, reference, **loop_options) -> DPOLoop:
    """The DPO loop over the session's policy, in its precision and with its (resumable) gradient scaler."""
    args, policy = session.args, session.model
    if reference is not None:
        reference.to(session.device)
    if args.compile and session.device.type == "cuda" and plain_causal_lm(policy) is not None:
        plain_causal_lm(policy).base_model.compile()  # in place: the class is kept, so the scored-head path applies
    return DPOLoop(
        policy,
        reference,
        beta=args.beta,
        average_logps=args.average_logps,
        precision=session.precision,
        scaler=session.scaler,
        **loop_options,
    )


def _loss_for(args: DPOArgs, loss_fn, step_fn):
    """The loss the loop trains with: ``loss_fn`` (a student's ``dpo_loss``) for DPO itself, the package's
    :func:`~dpo_lab.core.losses.preference_loss` for a variant (which a student's sigmoid code cannot be)."""
    if args.loss_type == "sigmoid":
        return loss_fn
    if loss_fn is not dpo_loss or step_fn is not None:
        raise ValueError(
            f"loss_type={args.loss_type!r} trains with the package's preference_loss; your dpo_loss / dpo_step"
            " implement the sigmoid loss only (use loss_type='sigmoid' to train with them)"
        )
    return functools.partial(preference_loss, loss_type=args.loss_type, label_smoothing=args.label_smoothing)


@dataclass
class StopRules:
    """The course's over-optimisation signs and early stopping, with what they remember across a resume."""

    args: DPOArgs
    recent_accuracies: deque
    initial_eval: dict[str, float]
    best_loss: float = math.inf
    evals_without_gain: int = 0

    @classmethod
    def resume(cls, args: DPOArgs, history: list[dict[str, Any]], saved: dict[str, Any] | None) -> StopRules:
        """Fresh rules, or those of a resumed run (its history and the state :meth:`state` saved)."""
        saved = saved or {}
        window = args.accuracy_window
        return cls(
            args,
            deque((r["rewards/accuracies"] for r in history[-window:]), maxlen=window),
            saved.get("initial_eval", {}),
            saved.get("best_loss", math.inf),
            saved.get("evals_without_gain", 0),
        )

    def state(self) -> dict[str, Any]:
        return {
            "initial_eval": self.initial_eval,
            "best_loss": self.best_loss,
            "evals_without_gain": self.evals_without_gain,
        }

    def check(self, row: dict[str, Any], held_out: dict[str, float] | None) -> str | None:
        """Why to stop after this step (None: go on): held-out KL over ``kl_limit``, no held-out gain for
        ``patience`` evaluations, or the moving train accuracy over ``train_accuracy_limit``."""
        args = self.args
        self.recent_accuracies.append(row["rewards/accuracies"])
        if held_out is not None:
            if held_out["eval_loss"] < self.best_loss:
                self.best_loss, self.evals_without_gain = held_out["eval_loss"], 0
            else:
                self.evals_without_gain += 1
            if args.kl_limit is not None and held_out.get("eval_kl", 0.0) > args.kl_limit:
                return f"over-optimisation: held-out KL {held_out['eval_kl']:.2f} > {args.kl_limit:g}"
            if args.patience and self.evals_without_gain >= args.patience:
                return (
                    f"early stop: held-out loss did not improve for {args.patience} evaluations"
                    f" (best {self.best_loss:.4f})"
                )
        window = self.recent_accuracies
        if args.train_accuracy_limit is not None and len(window) == args.accuracy_window:
            mean_acc = sum(window) / len(window)
            if mean_acc > args.train_accuracy_limit:
                return (
                    f"over-optimisation: train accuracy {mean_acc:.1%} (last {args.accuracy_window} steps)"
                    f" > {args.train_accuracy_limit:.0%}"
                )
        return None


@dataclass
class DPOResult:
    history: list[dict[str, Any]]
    stop_reason: str
    final_eval: dict[str, float] = field(default_factory=dict)
    initial_eval: dict[str, float] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)


def dpo_train(
    policy,
    reference,
    tokenizer,
    train_examples: list[dict[str, Any]],
    eval_examples: list[dict[str, Any]],
    args: DPOArgs,
    *,
    device=None,
    state_dir=None,
    ref_lm_head: dict | None = None,
    eval_ref_hidden: list[torch.Tensor] | None = None,
    loss_fn=dpo_loss,
    step_fn=None,
) -> DPOResult:
    """Train `policy` in place with DPO; return the per-step history and why it stopped.

    ``train_examples`` / ``eval_examples`` are :func:`dpo_lab.tokenize_pair` outputs, optionally carrying
    cached reference log-probs (then `reference` may be None). ``state_dir`` enables resume.
    ``loss_fn`` / ``step_fn``: see :class:`DPOLoop` (how a student's ``dpo_loss`` / ``dpo_step`` train the model).

    Stops early, with the reason recorded, on the course's over-optimisation signs: held-out KL above
    ``kl_limit``, ``accuracy_window``-step train accuracy above ``train_accuracy_limit``, and (when
    ``patience`` > 0) a held-out DPO loss that has not improved for ``patience`` evaluations.
    """
    loss_fn = _loss_for(args, loss_fn, step_fn)
    session = Session.open(policy, args, device, state_dir)
    device, precision = session.device, session.precision
    loop = _open_loop(session, reference, ref_lm_head=ref_lm_head, loss_fn=loss_fn, step_fn=step_fn)
    collate = PreferenceDataCollator(tokenizer, max_length=args.max_length)
    eval_batches = [
        collate(eval_examples[s : s + args.batch_size]) for s in range(0, len(eval_examples), args.batch_size)
    ]
    rules = StopRules.resume(args, session.history, session.extra)
    initial_eval, eval_seconds = rules.initial_eval, None  # the announced duration counts the evaluations to come
    if not session.resumed and eval_batches:
        t0 = time.perf_counter()
        initial_eval = rules.initial_eval = loop.evaluate(eval_batches, device, eval_ref_hidden)
        eval_seconds = time.perf_counter() - t0
    loop.policy = session.distribute(loop.policy)  # gradients are averaged across processes
    stream = session.stream(train_examples, collate)
    desc = f"DPO beta={args.beta:g}" + ("" if args.loss_type == "sigmoid" else f" {args.loss_type}")
    progress = session.progress(desc, evaluates=bool(eval_batches), eval_seconds=eval_seconds)
    stop_reason = "completed all steps"
    final_eval: dict[str, float] = {}
    for step in range(session.start_step + 1, args.steps + 1):
        t0 = time.perf_counter()
        row = loop.train_step(
            [next(stream) for _ in range(args.grad_accum)], session.optimizer, session.scheduler, args.max_grad_norm,
            step, device,
        )  # fmt: skip
        row = {"step": step, **row, "tokens_per_s": session.world * row.pop("tokens") / (time.perf_counter() - t0)}
        row = mean_across_processes(session.accelerator, row)
        held_out = None
        if eval_batches and session.evaluates_after(step):
            held_out = final_eval = loop.evaluate(eval_batches, device, eval_ref_hidden)
            row.update(held_out)
        reason = rules.check(row, held_out)
        session.history.append(row)
        _show(progress, row)
        if reason is not None:
            stop_reason = reason
            break
        session.save(step, rules.state())
    if progress is not None:
        progress.close()
    if eval_batches and not final_eval:
        final_eval = loop.evaluate(eval_batches, device, eval_ref_hidden)
    loop.policy = policy  # unwrap: the caller gets its own model back, trained in place
    session.close()
    used = {"precision_used": precision.label}
    if step_fn is not None:
        used["dpo_step_precision"] = loop.step_fn_precision(device).label
    return DPOResult(
        history=session.history,
        stop_reason=stop_reason,
        final_eval=final_eval,
        initial_eval=initial_eval,
        args={**asdict(args), "world_size": session.world, **used},
    )
