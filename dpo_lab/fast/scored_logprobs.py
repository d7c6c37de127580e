r"""Response log-probs without ever building the ``[2B, T, V]`` logits: the LM head only where a token is scored.

A causal LM's last step is ``logits = hidden @ W.T`` over EVERY position — prompt and padding included —
and ``sequence_logprobs`` then throws most of them away. With GPT-2's 50,257-word vocabulary that
matrix product is most of the model's compute, and the logits (plus their gradient) most of its memory.

Here the model's body runs as usual, but only the hidden states of scored positions (those whose NEXT
token has ``loss_mask`` 1) go through the LM head, a chunk of rows at a time, and each token's
log-probability is ``z[y] - logsumexp(z)``. Backward needs the softmax of those logits: it is kept when
the scored positions' ``[n, V]`` fits a budget (512 MB), else recomputed chunk by chunk, so the extra
memory is at most that budget or one chunk (32 MB) — never ``N × T × V`` logits plus their gradient:

.. math::
    \frac{\partial \log p(y)}{\partial z} = \mathrm{onehot}(y) - \mathrm{softmax}(z)

Same numbers as :func:`dpo_lab.sequence_logprobs` up to float rounding (tested, with gradients); the
model must compute ``logits = lm_head(base_model(...))`` with nothing in between (checked by class).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..core.losses import _reduce, _shift, sequence_logprobs

# logits = lm_head(last hidden state), no scaling or soft-capping in between (Gemma-2, Cohere … would need it)
SUPPORTED_MODELS = {
    "GPT2LMHeadModel",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GPTNeoXForCausalLM",
    "OPTForCausalLM",
    "PhiForCausalLM",
    "Phi3ForCausalLM",
}


def plain_causal_lm(model):
    """The transformers causal LM whose logits are exactly ``lm_head(base_model(...))``, or None.

    A PEFT model with LoRA adapters counts (the adapters live inside the same modules, so the inner
    model's forward includes them, and ``disable_adapter()`` still works). DDP wrappers, prompt-learning
    PEFT methods and other classes use the logits path: their forward does more than that.
    """
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        if getattr(model, "active_peft_config", None) is None or model.active_peft_config.is_prompt_learning:
            return None
        model = model.get_base_model()
    if type(model).__name__ in SUPPORTED_MODELS and model.get_output_embeddings() is not None:
        return model
    return None


def supports_scored_head(model) -> bool:
    return plain_causal_lm(model) is not None


CHUNK_ELEMENTS = 2**23  # logits computed at a time: 8M floats = 32 MB, about 166 rows of GPT-2's vocabulary
KEEP_PROBS_BYTES = 512 * 2**20  # keep the scored positions' softmax for backward when it fits here; else recompute it


class _ScoredTokenLogProbs(torch.autograd.Function):
    """``log_softmax(h @ W.T + b)[y]`` per row of ``h``, in row chunks.

    Backward needs ``softmax(z)`` again: kept from the forward when ``[n, V]`` fp32 fits in
    ``KEEP_PROBS_BYTES`` (one matrix product less), otherwise recomputed chunk by chunk (least memory).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_rows, keep_probs):
        n, vocab = hidden.shape[0], weight.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        probs = torch.empty(n, vocab, dtype=torch.float32, device=hidden.device) if keep_probs else None
        for start in range(0, n, chunk_rows):
            rows = slice(start, start + chunk_rows)
            z = F.linear(hidden[rows], weight, bias).float()  # [chunk, V] in fp32
            target = z.gather(-1, labels[rows, None])[:, 0]
            z = torch.log_softmax(z, dim=-1)  # one fused pass; the raw logits are freed
            out[rows] = z.gather(-1, labels[rows, None])[:, 0]
            lse[rows] = target - out[rows]
            if keep_probs:
                torch.exp(z, out=probs[rows])
        ctx.save_for_backward(hidden, weight, bias, labels, lse, probs)
        ctx.chunk_rows = chunk_rows
        device = hidden.device.type  # recompute under the same autocast as the forward (bf16 on CUDA)
        ctx.autocast = (device, torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, labels, lse, probs = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = (
            torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b and bias is not None else None
        )
        recompute = torch.autocast(*ctx.autocast) if ctx.autocast else contextlib.nullcontext()
        for start in range(0, hidden.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            h, g = hidden[rows], grad_out[rows].float()[:, None]
            if probs is not None:
                dz = probs[rows] * -g
            else:
                with recompute:
                    z = F.linear(h, weight, bias).float()
                dz = z.sub_(lse[rows, None]).exp_().mul_(-g)  # -g * softmax(z), in place
            dz.scatter_add_(-1, labels[rows, None], g)  # + g at the target token
            if need_h:
                grad_h[rows] = (dz @ weight.float()).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(dz.T, h.float())
            if grad_b is not None:
                grad_b += dz.sum(0)
        return (
            grad_h,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            None,
            None,
            None,
        )


def scored_token_logprobs(
    hidden: torch.Tensor,
    lm_head: torch.nn.Linear,
    labels: torch.Tensor,
    chunk_rows: int | None = None,
    keep_probs: bool | None = None,
) -> torch.Tensor:
    """``log p(labels[i] | hidden[i])`` for each row: ``[n]`` fp32, differentiable w.r.t. ``hidden`` and the head."""
    vocab = lm_head.weight.shape[0]
    chunk_rows = chunk_rows or max(16, CHUNK_ELEMENTS // vocab)
    if keep_probs is None:
        grads = torch.is_grad_enabled() and (hidden.requires_grad or lm_head.weight.requires_grad)
        keep_probs = grads and hidden.shape[0] * vocab * 4 <= KEEP_PROBS_BYTES
    return _ScoredTokenLogProbs.apply(hidden, lm_head.weight, lm_head.bias, labels, chunk_rows, keep_probs)


def scored_sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    average: bool = False,
    chunk_rows: int | None = None,
    keep_probs: bool | None = None,
) -> torch.Tensor:
    """Same as ``sequence_logprobs(model(...).logits, input_ids, loss_mask)``, with the LM head on scored positions
    only.
    """
    model = plain_causal_lm(model)
    if model is None:
        raise ValueError(
            "scored_sequence_logprobs needs a plain causal LM (see SUPPORTED_MODELS); use sequence_logprobs on the "
            "logits"
        )
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    mask = loss_mask[:, 1:].to(torch.float32)  # position t predicts token t + 1
    rows, cols = mask.nonzero(as_tuple=True)
    token_logps = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    if rows.numel():
        picked = scored_token_logprobs(
            hidden[rows, cols], model.get_output_embeddings(), input_ids[rows, cols + 1], chunk_rows, keep_probs
        )
        token_logps = token_logps.index_put((rows, cols), picked)
    return _reduce(token_logps, mask, average)


def sequence_logprobs_lean(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor, average: bool = False, chunk_size: int = 512
) -> torch.Tensor:
    """Same result as :func:`sequence_logprobs`, without an fp32 ``[N, T, V]`` log-softmax.

    ``log_softmax(z)[y] = z[y] - logsumexp(z)``: only the SCORED positions are taken (prompt and
    padding never are), and their logsumexp is computed in fp32 ``chunk_size`` positions at a time, so
    the extra memory is ``chunk_size × V`` floats instead of ``N × T × V``. Gradients flow the same way.
    """
    logits, labels, mask = _shift(logits, input_ids, loss_mask)
    rows, cols = mask.nonzero(as_tuple=True)  # the scored positions, in row-major order
    token_logps = torch.zeros(mask.shape, dtype=torch.float32, device=logits.device)
    if rows.numel():
        picked = []
        for start in range(0, rows.numel(), chunk_size):
            r, c = rows[start : start + chunk_size], cols[start : start + chunk_size]
            z = logits[r, c].float()  # [chunk, V]
            picked.append(z.gather(-1, labels[r, c].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1))
        token_logps = token_logps.index_put((rows, cols), torch.cat(picked))
    return _reduce(token_logps, mask, average)


def batch_logprobs(
    model, batch: dict[str, torch.Tensor], average: bool = False, lean: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over the collated ``[chosen rows; rejected rows]`` batch → ``(chosen_logps, rejected_logps)``,
    each ``[B]``.

    One concatenated forward (not two) keeps both halves in the same kernels and halves the calls.
    ``lean=True`` (same numbers, less time and memory): the LM head only on scored positions when the
    model allows it (:mod:`dpo_lab.fast.scored_logprobs`), else :func:`sequence_logprobs_lean` on the logits.
    ``lean=False`` is the textbook path: full logits, then :func:`sequence_logprobs`.
    """
    if lean and supports_scored_head(model):
        logps = scored_sequence_logprobs(
            model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], average=average
        )
        return logps.chunk(2, dim=0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    fn = sequence_logprobs_lean if lean else sequence_logprobs
    logps = fn(logits, batch["input_ids"], batch["loss_mask"], average=average)
    chosen, rejected = logps.chunk(2, dim=0)
    return chosen, rejected


def reference_logprobs(
    ref_model, batch: dict[str, torch.Tensor], average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batch_logprobs` for the frozen reference: no graph is built, nothing flows back to it."""
    with torch.inference_mode():
        chosen, rejected = batch_logprobs(ref_model, batch, average=average)
    return chosen.clone(), rejected.clone()  # plain tensors again, usable in the policy's autograd graph
