r"""Sequence log-probabilities and the DPO loss — the math of the lab, written to be read.

DPO (Rafailov et al., 2023) turns the KL-constrained RLHF objective into a classification loss on
preference pairs. With :math:`\pi_\theta` the policy, :math:`\pi_{ref}` the frozen reference and
:math:`(x, y_w, y_l)` a prompt with its chosen and rejected responses:

.. math::
    \mathcal{L} = -\log\sigma\Big(\beta\log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
                                 -\beta\log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\Big)

:math:`\log\pi(y|x)` is the SUM of the response tokens' log-probabilities (:func:`sequence_logprobs`);
:math:`\beta\log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}` is the "implicit reward" of a response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def _shift(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor):
    """Align predictions with targets: the logits at position t predict the token at t + 1."""
    if logits.shape[:2] != input_ids.shape or input_ids.shape != loss_mask.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)} must be [N, T, V] with input_ids {tuple(input_ids.shape)}"
            f" and loss_mask {tuple(loss_mask.shape)} both [N, T]"
        )
    return logits[:, :-1, :], input_ids[:, 1:], loss_mask[:, 1:].to(torch.float32)


def _reduce(token_logps: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    """Masked sum (or mean) over tokens, accumulated in float64 and returned as float32.

    A sequence log-prob is a sum of ~100 terms of size ~1-10; in fp32 the rounding of that sum alone
    reaches a few 1e-5. Accumulating in float64 (a cheap [N, T] tensor) leaves only the final rounding.
    (Apple's MPS has no float64, so it accumulates in fp32 there.)
    """
    acc = torch.float32 if token_logps.device.type == "mps" else torch.float64
    mask = mask.to(acc)
    total = (token_logps.to(acc) * mask).sum(dim=-1)
    if average:
        total = total / mask.sum(dim=-1).clamp(min=1.0)
    return total.to(torch.float32)


def sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Log-probability of each row's response: ``Tensor[N]`` (fp32).

    Args:
        logits: ``[N, T, V]`` — the model's output for ``input_ids`` (any float dtype).
        input_ids: ``[N, T]`` — the token ids that were fed in.
        loss_mask: ``[N, T]`` — 1 on the response tokens to score (EOS included), 0 on prompt/padding.
        average: ``False`` (DPO): SUM over response tokens, :math:`\\log\\pi(y|x)`.
            ``True``: MEAN over response tokens — the length-normalised variant (as in SimPO/IPO);
            it divides each log-ratio by the length, which silently shrinks the effective beta.

    Steps: (1) shift by one — position t predicts token t + 1, so the first token is never scored and
    the mask is shifted WITH the labels; (2) log-softmax in fp32 (fp16/bf16 lose the small
    probabilities and can give -inf/NaN); (3) gather the log-probability of the actual next token;
    (4) masked sum (or mean).
    """
    logits, labels, mask = _shift(logits, input_ids, loss_mask)
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [N, T-1, V]
    token_logps = torch.gather(log_probs, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)  # [N, T-1]
    return _reduce(token_logps, mask, average)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO ("sigmoid") loss and implicit rewards: ``(losses, chosen_rewards, rejected_rewards)``, each ``[B]``.

    * ``chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)``, likewise for rejected;
      both DETACHED — they are for logging, the gradient flows through ``losses`` only.
    * ``losses = -logsigmoid(beta * ((pc - rc) - (pr - rr)))``: beta multiplies the margin INSIDE the
      sigmoid. Return per-pair values; the caller takes ``.mean()``.

    At step 0 the policy IS the reference, so every log-ratio is 0 and every loss is
    ``-log σ(0) = ln 2 ≈ 0.6931``. A LARGER beta keeps the policy CLOSER to the reference (a given
    margin is reached with a smaller log-ratio); a smaller beta lets it move further.

    >>> reference = torch.tensor([-12.0]), torch.tensor([-15.0])  # log π_ref(y_w|x), log π_ref(y_l|x)
    >>> round(dpo_loss(*reference, *reference, beta=0.1)[0].item(), 4)  # policy == reference: ln 2
    0.6931
    >>> losses, chosen, rejected = dpo_loss(torch.tensor([-11.0]), torch.tensor([-16.0]), *reference, beta=0.1)
    >>> round(chosen.item(), 2), round(rejected.item(), 2), round(losses.item(), 4)  # margin 0.2 → -log σ(0.2)
    (0.1, -0.1, 0.5981)
    """
    check_beta(beta)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


@dataclass(frozen=True)
class LossVariant:
    """One preference loss, registered once: everything the package needs to train, name and draw it.

    ``per_pair(margin, beta, eps)`` maps the log-ratio margin h (``[B]``) to per-pair losses; ``label`` is how
    stage 04 names its runs; ``smoothed``: it takes ``label_smoothing`` (the assumed flip rate ε);
    ``average_logps``: it is defined on length-averaged (per-token) log-probs, so its β lives on that scale
    and every run of it uses ``average_logps=True``.
    """

    name: str  # TRL's loss_type where TRL has one: the config value, the CLI choice, the folder prefix
    label: str
    per_pair: Callable[[torch.Tensor, float, float], torch.Tensor]
    smoothed: bool = False
    average_logps: bool = False

    @property
    def beta_scale(self) -> str:
        return "per-token log-ratio margin" if self.average_logps else "summed log-ratio margin (nats)"


LOSSES: dict[str, LossVariant] = {}
"""Every loss :func:`preference_loss` knows, by name. A new variant is a function of the margin plus one
:func:`register_loss` line below; the config, the CLI, the loop, 04's labels and the plots read it from here."""


def register_loss(variant: LossVariant) -> LossVariant:
    if variant.name in LOSSES:
        raise ValueError(f"loss_type {variant.name!r} is already registered")
    LOSSES[variant.name] = variant
    return variant


def _sigmoid(h, beta, eps):
    return -F.logsigmoid(beta * h)


def _ipo(h, beta, eps):
    return (h - 1 / (2 * beta)) ** 2


def _hinge(h, beta, eps):
    return torch.relu(1 - beta * h)


def _conservative(h, beta, eps):
    return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


def _robust(h, beta, eps):
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


register_loss(LossVariant("sigmoid", "DPO", _sigmoid))
register_loss(LossVariant("ipo", "IPO", _ipo, average_logps=True))
register_loss(LossVariant("hinge", "hinge", _hinge))
register_loss(LossVariant("conservative", "cDPO", _conservative, smoothed=True))
register_loss(LossVariant("robust", "rDPO", _robust, smoothed=True))


def check_beta(beta: float) -> None:
    """beta must be a finite number > 0: 0 removes the preference signal; inf (or nan) gives no trainable loss."""
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(
            f"beta must be a finite number > 0, got {beta} (beta = 0 removes the preference signal;"
            " beta = inf makes every loss 0 or inf, nothing to train on)"
        )


def check_loss_type(loss_type: str, label_smoothing: float = 0.0) -> None:
    """A clear error for an unknown variant or a label-smoothing value it cannot take."""
    if loss_type not in LOSSES:
        raise ValueError(f"loss_type must be one of {tuple(LOSSES)}, got {loss_type!r}")
    if LOSSES[loss_type].smoothed:
        if not 0.0 < label_smoothing < 0.5:
            raise ValueError(
                f"loss_type={loss_type!r} needs 0 < label_smoothing < 0.5 (the share of flipped labels it assumes),"
                f" got {label_smoothing}"
            )
    elif label_smoothing != 0.0:
        smoothed = tuple(name for name, v in LOSSES.items() if v.smoothed)
        raise ValueError(f"label_smoothing is used by {smoothed} only; loss_type={loss_type!r} ignores it")


def preference_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""DPO and its common variants, all functions of the same log-ratio margin
    :math:`h = (\log\frac{\pi}{\pi_{ref}})_w - (\log\frac{\pi}{\pi_{ref}})_l`.

    Same arguments and return value as :func:`dpo_loss`; ``loss_type`` picks the per-pair loss:

    * ``sigmoid`` — DPO: :math:`-\log\sigma(\beta h)`. Never zero: it keeps pushing the margin up.
    * ``ipo`` — IPO (Azar et al., 2023): :math:`(h - \frac{1}{2\beta})^2`, a squared loss that aims the
      margin at a finite target instead of infinity, so it cannot over-fit deterministic preferences.
      Defined (as in TRL) on LENGTH-AVERAGED log-probs: pass per-token means (``average=True``).
    * ``hinge`` — SLiC-style: :math:`\max(0, 1 - \beta h)`; zero once the margin reaches :math:`1/\beta`.
    * ``conservative`` — cDPO (Mitchell, 2023): assume each label is flipped with probability
      :math:`\varepsilon` = ``label_smoothing`` and train on the expected loss
      :math:`-(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h)`; its optimum is a
      finite margin, so a wrong label cannot drive the policy arbitrarily far.
    * ``robust`` — rDPO (Chowdhury et al., 2024), TRL's label-noise loss: the unbiased correction
      :math:`\frac{-(1-\varepsilon)\log\sigma(\beta h) + \varepsilon\log\sigma(-\beta h)}{1-2\varepsilon}`.

    >>> reference = torch.tensor([-12.0]), torch.tensor([-15.0])
    >>> policy = torch.tensor([-11.0]), torch.tensor([-16.0])  # margin h = 2 nats
    >>> [round(preference_loss(*policy, *reference, 0.5, kind)[0].item(), 4) for kind in ("sigmoid", "ipo", "hinge")]
    [0.3133, 1.0, 0.0]
    >>> round(preference_loss(*policy, *reference, 0.5, "conservative", label_smoothing=0.1)[0].item(), 4)
    0.4133
    """
    check_loss_type(loss_type, label_smoothing)
    check_beta(beta)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = LOSSES[loss_type].per_pair(chosen_logratios - rejected_logratios, beta, label_smoothing)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def dpo_metrics(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    losses: torch.Tensor | None = None,
) -> dict[str, float]:
    """Batch means under TRL's metric names.

    ``rewards/accuracies`` uses a strict ``>``: when policy == reference both rewards are 0 and the
    accuracy is 0.0, not 0.5 (TRL does the same).
    """
    out = {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "logps/chosen": policy_chosen_logps.detach().mean().item(),
        "logps/rejected": policy_rejected_logps.detach().mean().item(),
    }
    if losses is not None:
        out = {"loss": losses.detach().mean().item(), **out}
    return out


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(policy ‖ reference) of the next-token distributions, one value per row of ``[M, V]`` logits (fp32).

    Summed over the positions of a response it is the teacher-forced sequence KL, the "stay close to
    the reference" quantity that beta trades against the reward.
    """
    log_p = torch.log_softmax(policy_logits.float(), dim=-1)
    log_q = torch.log_softmax(ref_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)
