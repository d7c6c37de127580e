"""The two models' modes in DPO: dropout off on both, the reference frozen.

With dropout on, the policy's and the reference's log-probs are random: the step-0 loss is not ln 2
and the implicit rewards are noise. The reference is only ever read: eval mode, no gradients.
"""

from __future__ import annotations

import torch


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
