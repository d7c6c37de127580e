"""Reference log-prob cache: run the frozen reference ONCE per (SFT checkpoint, data, tokenisation).

The reference never changes during DPO, so its log-probs of every training pair are the same at every
step and for every beta. They are computed once and stored beside the SFT checkpoint under a key that
covers everything that changes them: the SFT checkpoint's id (its manifest hashes every weight file),
the token ids of every pair (so the data, the tokenizer and max_length), sum vs mean, and the
precision. A beta re-run finds the cache and never calls the reference model; a changed input gives
another key, so a stale cache is never used.

For the held-out KL(policy ‖ reference) the cache also keeps the reference's final hidden states at
the scored positions of each held-out chosen response and its LM head: ``hidden @ W.T`` gives back the
reference's logits there (checked when the cache is built), so the KL needs no reference forward either.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_bytes, atomic_write_text
from .collator import PreferenceDataCollator
from .runtime import autocast

CACHE_DIR = "ref_cache"
CACHE_FORMAT = 1


def examples_fingerprint(examples: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            h.update(key.encode())
            h.update(json.dumps(list(ex[key])).encode())
    return h.hexdigest()


def cache_key(sft_id: str, train_examples, eval_examples, *, average: bool, precision: str) -> dict[str, Any]:
    """Everything the cached numbers depend on, and its hash (the file name)."""
    parts = {
        "format": CACHE_FORMAT,
        "sft_checkpoint": sft_id,
        "train_examples": examples_fingerprint(train_examples),
        "eval_examples": examples_fingerprint(eval_examples),
        "average": average,
        "precision": precision,
    }
    parts["key"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
    return parts


def _scored_hidden(outputs, loss_mask: torch.Tensor, rows: range) -> list[torch.Tensor]:
    """Final hidden states at the positions that predict response tokens, one [n_i, d] tensor per row."""
    hidden = outputs.hidden_states[-1][:, :-1]
    mask = loss_mask[:, 1:].bool()
    return [hidden[r][mask[r]].float().cpu() for r in rows]


@torch.inference_mode()
def compute_reference_cache(reference, tokenizer, train_examples, eval_examples, *, batch_size: int, average: bool = False,
                            device: torch.device, max_length: int | None = None) -> dict[str, Any]:
    """Reference log-probs for every train and eval pair (+ eval hidden states for the KL)."""
    from .losses import sequence_logprobs_lean

    reference.eval()
    collate = PreferenceDataCollator(tokenizer, max_length=max_length)
    out: dict[str, Any] = {}
    head = reference.get_output_embeddings()
    checked = False
    for split, examples in (("train", train_examples), ("eval", eval_examples)):
        chosen, rejected, hidden = [], [], []
        for start in range(0, len(examples), batch_size):
            part = examples[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(part).items()}
            with autocast(device):
                outputs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                                    output_hidden_states=(split == "eval"))
            logps = sequence_logprobs_lean(outputs.logits, batch["input_ids"], batch["loss_mask"], average=average)
            c, r = logps.chunk(2)
            chosen.append(c.cpu())
            rejected.append(r.cpu())
            if split == "eval":
                rows = range(len(part))
                hidden += _scored_hidden(outputs, batch["loss_mask"], rows)
                if not checked:  # hidden @ W.T must give the logits back, or the KL would be wrong
                    mask = batch["loss_mask"][:, 1:].bool()
                    expected = outputs.logits[:, :-1][0][mask[0]].float()
                    rebuilt = head(hidden[0].to(device).to(head.weight.dtype)).float()
                    if not torch.allclose(rebuilt, expected, atol=1e-3, rtol=1e-3):
                        hidden = None
                    checked = True
        out[split] = {"chosen": torch.cat(chosen), "rejected": torch.cat(rejected)} if chosen else {"chosen": torch.zeros(0), "rejected": torch.zeros(0)}
        if split == "eval" and hidden is not None:
            out["eval"]["hidden"] = hidden
    if "hidden" in out.get("eval", {}):
        out["lm_head"] = {"weight": head.weight.detach().float().cpu().clone(),
                          "bias": None if getattr(head, "bias", None) is None else head.bias.detach().float().cpu().clone()}
    return out


def cache_path(sft_dir: str | Path, key: dict[str, Any]) -> Path:
    return Path(sft_dir) / CACHE_DIR / f"{key['key']}.pt"


def save_reference_cache(sft_dir: str | Path, key: dict[str, Any], cache: dict[str, Any]) -> Path:
    import io

    path = cache_path(sft_dir, key)
    buffer = io.BytesIO()
    torch.save({"key": key, **cache}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(path.with_suffix(".json"), json.dumps(key, indent=2, sort_keys=True) + "\n")
    return path


def load_reference_cache(sft_dir: str | Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cache for exactly this key, or None. A file whose recorded key differs is rejected loudly."""
    path = cache_path(sft_dir, key)
    if not path.exists():
        return None
    cache = torch.load(path, map_location="cpu", weights_only=False)
    stored = cache.get("key", {})
    if stored != key:
        diff = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
        raise ValueError(f"{path}: reference cache was built for different inputs ({', '.join(diff)}); delete it to rebuild")
    return cache


def attach_reference_logps(examples: list[dict[str, Any]], logps: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Copies of `examples` carrying ``ref_chosen_logps`` / ``ref_rejected_logps`` (the collator passes them on)."""
    if len(examples) != len(logps["chosen"]):
        raise ValueError(f"cache has {len(logps['chosen'])} entries for {len(examples)} examples")
    return [dict(ex, ref_chosen_logps=float(c), ref_rejected_logps=float(r))
            for ex, c, r in zip(examples, logps["chosen"].tolist(), logps["rejected"].tolist())]
