"""Diagnosing DPO from the signals the data and the two models already give: where the answers start.

DPO raises the margin log π(chosen) − log π(rejected) wherever the two answers differ, and nowhere else:
over the tokens a pair shares at its start the two log-ratios are the same, so their gradients cancel.
When the chosen and rejected answers of many pairs differ already in their FIRST token ("No, …" vs
"Yes, …", "A clear example …" vs "Gravity basically …"), one cheap way to widen every one of those
margins is to move the probability of the opening tokens. Nothing in the loss keeps the chosen answer's
own likelihood up (likelihood displacement), so the probability the model takes away from an opening
that rejected answers used — often the topic's name, which good answers to other questions start
with too — goes to tokens no answer starts with: the answer then begins in the middle of a sentence.

* :func:`opening_table` — the training pairs, per kind of question: how often chosen and rejected share
  their first token, and how many tokens they share at the start (the part DPO cannot see);
* :func:`opening_shift` — the models, on held-out prompts: the probability of starting mid-sentence
  (a lowercase first token) and the openings each one picks first.

Notebook 03 shows both after training; a larger β keeps the openings where SFT had them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from ..core.tokenization import common_prefix_length


def opening_table(tokenizer, pairs: list[dict[str, Any]], *, by: str = "kind"):
    """Per ``by`` (the corpus' question kind): pairs, the share whose chosen and rejected answers start with the
    same token, and the mean number of tokens they share at the start vs the mean answer length."""
    import pandas as pd

    rows: dict[str, dict[str, float]] = {}
    for pair in pairs:
        chosen = tokenizer(pair["chosen"], add_special_tokens=False)["input_ids"]
        rejected = tokenizer(pair["rejected"], add_special_tokens=False)["input_ids"]
        shared = common_prefix_length(chosen, rejected)
        row = rows.setdefault(pair.get(by, "all"), {"pairs": 0, "same_first": 0, "shared": 0, "length": 0})
        row["pairs"] += 1
        row["same_first"] += shared > 0
        row["shared"] += shared
        row["length"] += (len(chosen) + len(rejected)) / 2
    return pd.DataFrame(
        [
            {
                by: key,
                "pairs": r["pairs"],
                "same_first_token": r["same_first"] / r["pairs"],
                "shared_start_tokens": r["shared"] / r["pairs"],
                "answer_tokens": r["length"] / r["pairs"],
            }
            for key, r in sorted(rows.items())
        ]
    )


@torch.no_grad()
def _first_token_probs(model, tokenizer, prompt: str, device) -> torch.Tensor:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    return torch.softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1).cpu()


def opening_shift(models: dict[str, Any], tokenizer, prompts: list[str], *, device="cpu", top: int = 4):
    """Per model: the mean probability that the answer starts mid-sentence (a first token that begins with a
    lowercase letter), and the ``top`` openings it most often puts first (share of prompts where each is the
    most likely first token)."""
    import pandas as pd

    pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    lowercase = torch.tensor([p.strip()[:1].islower() for p in pieces])
    rows = []
    for name, model in models.items():
        model.eval()
        mid, firsts = 0.0, Counter()
        for prompt in prompts:
            probs = _first_token_probs(model, tokenizer, prompt, device)
            probs = probs[: len(pieces)]
            mid += float(probs[lowercase[: len(probs)]].sum())
            firsts[pieces[int(probs.argmax())].strip() or repr(pieces[int(probs.argmax())])] += 1
        rows.append(
            {
                "model": name,
                "p_mid_sentence_start": mid / len(prompts),
                "most_likely_openings": ", ".join(f"{t} {n / len(prompts):.0%}" for t, n in firsts.most_common(top)),
            }
        )
    return pd.DataFrame(rows)
