"""Collators: lists of token-id dicts → padded tensors with the masks the losses need.

Why a separate ``loss_mask`` instead of deriving it from ``attention_mask`` or from the pad id?
GPT-2 has no pad token, so the usual fix is ``pad_token = eos_token``. Then "every token equal to
the pad id" also catches the real EOS at the end of each response — and masking it away means the
model is never taught to stop. The collator therefore builds ``loss_mask`` from the LENGTHS of the
pieces, never from token values: 1 exactly on response tokens (EOS included), 0 on prompt and padding.
"""

from __future__ import annotations

from typing import Any

import torch


def _pad_id(tokenizer) -> int:
    """The pad id, falling back to EOS (GPT-2 has no pad token); it only fills masked positions."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    raise ValueError(f"{type(tokenizer).__name__} has neither a pad token nor an EOS token to pad with")


def _right_pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class PreferenceDataCollator:
    """Batch ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` dicts for ONE concatenated forward pass.

    Returns ``{"input_ids", "attention_mask", "loss_mask"}``, each ``[2B, T]`` (long): rows ``0..B-1``
    are ``prompt + chosen`` and rows ``B..2B-1`` are ``prompt + rejected`` (chosen first, as TRL and the
    DPO reference code), right-padded to the longest row. ``loss_mask`` is 1 on response tokens only.
    With ``max_length`` each row keeps its first ``max_length`` tokens. Extra keys present in every
    example (e.g. cached ``ref_chosen_logps``) are passed through as tensors.
    """

    def __init__(self, tokenizer, max_length: int | None = None):
        self.pad_token_id = _pad_id(tokenizer)
        self.max_length = max_length

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("PreferenceDataCollator got an empty list of examples")
        sequences, masks = [], []
        for response_key in ("chosen_ids", "rejected_ids"):  # all chosen rows, then all rejected rows
            for i, ex in enumerate(examples):
                for key in ("prompt_ids", response_key):
                    if key not in ex:
                        raise KeyError(f"example {i} has no '{key}' (expected the output of dpo_lab.tokenize_pair)")
                prompt, response = list(ex["prompt_ids"]), list(ex[response_key])
                seq, mask = prompt + response, [0] * len(prompt) + [1] * len(response)
                if self.max_length is not None:
                    seq, mask = seq[: self.max_length], mask[: self.max_length]
                sequences.append(seq)
                masks.append(mask)
        batch = {
            "input_ids": _right_pad(sequences, self.pad_token_id),
            "attention_mask": _right_pad([[1] * len(s) for s in sequences], 0),
            "loss_mask": _right_pad(masks, 0),
        }
        passthrough = set(examples[0]) - {"prompt_ids", "chosen_ids", "rejected_ids"}
        for key in sorted(passthrough):
            values = [ex.get(key) for ex in examples]
            if all(isinstance(v, (int, float)) for v in values):
                batch[key] = torch.tensor(
                    values, dtype=torch.float32 if any(isinstance(v, float) for v in values) else torch.long
                )
        return batch


class SFTDataCollator:
    """Batch ``{"prompt_ids", "response_ids"}`` dicts for supervised fine-tuning.

    Returns ``{"input_ids", "attention_mask", "labels"}`` ``[B, T]``: ``labels`` is ``input_ids`` with
    prompt and padding set to -100 (ignored by the loss), so only response tokens — EOS included —
    are trained. Models shift labels inside their forward, so no shift here.
    """

    def __init__(self, tokenizer, max_length: int | None = None):
        self.pad_token_id = _pad_id(tokenizer)
        self.max_length = max_length

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("SFTDataCollator got an empty list of examples")
        sequences, labels = [], []
        for ex in examples:
            prompt, response = list(ex["prompt_ids"]), list(ex["response_ids"])
            seq, lab = prompt + response, [-100] * len(prompt) + response
            if self.max_length is not None:
                seq, lab = seq[: self.max_length], lab[: self.max_length]
            sequences.append(seq)
            labels.append(lab)
        return {
            "input_ids": _right_pad(sequences, self.pad_token_id),
            "attention_mask": _right_pad([[1] * len(s) for s in sequences], 0),
            "labels": _right_pad(labels, -100),
        }


def merge_pair_batches(batches: list[dict[str, torch.Tensor]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Several collated preference batches as ONE: ``[all chosen rows; all rejected rows]``, right-padded.

    Why: a function that does a whole optimizer step on one batch (a student's ``dpo_step``) cannot
    accumulate gradients over micro-batches; on equal-sized micro-batches, one step on the merged batch
    has the same mean loss and gradient as accumulating them. Padded positions are masked (any id works).
    """
    if len(batches) == 1:
        return batches[0]
    width = max(b["input_ids"].shape[1] for b in batches)
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "loss_mask": 0}
    merged: dict[str, torch.Tensor] = {}
    for key in batches[0]:
        halves = []
        for b in batches:
            value = b[key]
            if key in fill:
                value = torch.nn.functional.pad(value, (0, width - value.shape[1]), value=fill[key])
                halves.append(value.chunk(2, dim=0))
            else:  # per-pair values (cached reference log-probs): [B], already split by name
                halves.append((value,))
        merged[key] = torch.cat([h[0] for h in halves] + [h[1] for h in halves if len(h) > 1], dim=0)
    return merged
