r"""Response log-probs without ever building the ``[2B, T, V]`` logits: the LM head only where a token is scored.

A causal LM's last step is ``logits = hidden @ W.T`` over EVERY position — prompt and padding included —
and ``sequence_logprobs`` then throws most of them away. With GPT-2's 50,257-word vocabulary that
matrix product is most of the model's compute, and the logits (plus their gradient) most of its memory.

Here the model's body runs as usual, but only the hidden states of scored positions (those whose NEXT
token has ``loss_mask`` 1) go through the LM head, ``chunk_size`` rows at a time, and each token's
log-probability is ``z[y] - logsumexp(z)``. The backward pass recomputes each chunk's logits instead
of keeping them, so the extra memory is ``chunk_size × V`` floats, not ``N × T × V``:

.. math::
    \frac{\partial \log p(y)}{\partial z} = \mathrm{onehot}(y) - \mathrm{softmax}(z)

Same numbers as :func:`dpo_lab.sequence_logprobs` up to float rounding (tested, with gradients); the
model must compute ``logits = lm_head(base_model(...))`` with nothing in between (checked by class).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# logits = lm_head(last hidden state), no scaling or soft-capping in between (Gemma-2, Cohere … would need it)
SUPPORTED_MODELS = {"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                    "GPTNeoXForCausalLM", "OPTForCausalLM", "PhiForCausalLM", "Phi3ForCausalLM"}


def supports_scored_head(model) -> bool:
    """True for a plain transformers causal LM whose logits are exactly ``lm_head(base_model(...))``.

    Wrappers (DDP, PEFT) and other classes use the logits path: their forward does more than that.
    """
    return type(model).__name__ in SUPPORTED_MODELS and model.get_output_embeddings() is not None


class _ScoredTokenLogProbs(torch.autograd.Function):
    """``log_softmax(h @ W.T + b)[y]`` per row of ``h``, chunked; backward recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for start in range(0, hidden.shape[0], chunk_size):
            z = F.linear(hidden[start : start + chunk_size], weight, bias).float()  # [chunk, V] in fp32
            lse[start : start + chunk_size] = torch.logsumexp(z, dim=-1)
            out[start : start + chunk_size] = z.gather(-1, labels[start : start + chunk_size, None])[:, 0] - lse[start : start + chunk_size]
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.chunk_size = chunk_size
        device = hidden.device.type  # recompute under the same autocast as the forward (bf16 on CUDA)
        ctx.autocast = (device, torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b and bias is not None else None
        recompute = torch.autocast(*ctx.autocast) if ctx.autocast else contextlib.nullcontext()
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            h = hidden[rows]
            with recompute:
                z = F.linear(h, weight, bias).float()
            g = grad_out[rows].float()
            dz = torch.exp(z - lse[rows, None]).mul_(-g[:, None])  # -g * softmax(z)
            dz.scatter_add_(-1, labels[rows, None], g[:, None])  # + g at the target token
            if need_h:
                grad_h[rows] = (dz @ weight.float()).to(hidden.dtype)
            if need_w:
                grad_w += dz.T @ h.float()
            if grad_b is not None:
                grad_b += dz.sum(0)
        return (grad_h, grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if grad_b is not None else None, None, None)


def scored_token_logprobs(hidden: torch.Tensor, lm_head: torch.nn.Linear, labels: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """``log p(labels[i] | hidden[i])`` for each row: ``[n]`` fp32, differentiable w.r.t. ``hidden`` and the head."""
    return _ScoredTokenLogProbs.apply(hidden, lm_head.weight, lm_head.bias, labels, chunk_size)


def scored_sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                             average: bool = False, chunk_size: int = 1024) -> torch.Tensor:
    """Same as ``sequence_logprobs(model(...).logits, input_ids, loss_mask)``, with the LM head on scored positions only."""
    from .losses import _reduce

    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    mask = loss_mask[:, 1:].to(torch.float32)  # position t predicts token t + 1
    rows, cols = mask.nonzero(as_tuple=True)
    token_logps = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    if rows.numel():
        picked = scored_token_logprobs(hidden[rows, cols], model.get_output_embeddings(), input_ids[rows, cols + 1], chunk_size)
        token_logps = token_logps.index_put((rows, cols), picked)
    return _reduce(token_logps, mask, average)
