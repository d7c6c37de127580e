"""Tables that show what the tokenizer and the collator did — the intermediate values a learner checks.

``token_table`` lays one pair out token by token (where the prompt ends, where EOS sits, which tokens
the loss scores); ``batch_table`` shows one row of a collated batch with its three masks.
"""

from __future__ import annotations

from typing import Any


def _piece(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id])
    return text.replace("\n", "\\n") if text.strip() else repr(text)


def token_table(tokenizer, example: dict[str, list[int]], response: str = "chosen_ids"):
    """One row per token of ``prompt + response``: position, id, text, segment, and whether the loss scores it.

    ``example`` is a :func:`dpo_lab.tokenize_pair` output. The ``segment`` column marks the prompt,
    the response, and the response's final EOS token (which IS scored: the model must learn to stop).
    """
    import pandas as pd

    prompt, reply = list(example["prompt_ids"]), list(example[response])
    rows: list[dict[str, Any]] = []
    for pos, tid in enumerate(prompt + reply):
        in_response = pos >= len(prompt)
        is_eos = in_response and pos == len(prompt) + len(reply) - 1 and tid == tokenizer.eos_token_id
        rows.append(
            {
                "position": pos,
                "token_id": tid,
                "text": _piece(tokenizer, tid),
                "segment": "EOS" if is_eos else ("response" if in_response else "prompt"),
                "scored_by_loss": int(in_response),
            }
        )
    return pd.DataFrame(rows)


def batch_table(tokenizer, batch: dict[str, Any], row: int):
    """Row ``row`` of a collated batch, one line per position: the token and every per-token tensor of the batch.

    For a :class:`dpo_lab.PreferenceDataCollator` batch that is ``attention_mask`` and ``loss_mask``;
    for an :class:`dpo_lab.SFTDataCollator` batch, ``attention_mask`` and ``labels`` (-100 = not trained on).
    """
    import pandas as pd

    ids = batch["input_ids"][row].tolist()
    table: dict[str, Any] = {"position": range(len(ids)), "token_id": ids, "text": [_piece(tokenizer, t) for t in ids]}
    for key, value in batch.items():
        if key != "input_ids" and getattr(value, "shape", None) == batch["input_ids"].shape:
            table[key] = value[row].tolist()
    return pd.DataFrame(table)


def mask_picture(batch: dict[str, Any], key: str = "loss_mask", max_chars: int = 96) -> str:
    """A text picture of a batch mask, one line per row (chosen rows first, then rejected).

    '█' = 1 and '·' = 0. Rows longer than ``max_chars`` are drawn at k tokens per character, and a
    character covering both values is drawn '▌'.
    """
    mask = batch[key]
    half = mask.shape[0] // 2
    width = mask.shape[1]
    k = max(1, -(-width // max_chars))
    lines = [f"{key}: {width} positions" + (f", 1 character = {k} tokens" if k > 1 else "")]
    for i, r in enumerate(mask.tolist()):
        label = f"chosen   {i}" if i < half else f"rejected {i - half}"
        chunks = [r[j : j + k] for j in range(0, width, k)]
        lines.append(f"{label:<11} " + "".join("█" if all(c) else ("·" if not any(c) else "▌") for c in chunks))
    return "\n".join(lines)
