"""Reference log-prob cache: the frozen reference runs ONCE per (SFT checkpoint, pair, tokenisation).

The reference never changes during DPO, so its log-probs of a pair are the same at every step and for
every beta. They are stored beside the SFT checkpoint (``02_sft/ref_cache/<key>.pt``):

* the FILE key covers the SFT checkpoint's id (its manifest hashes every weight file), sum vs mean,
  and the precision — another checkpoint or setting gives another file;
* each ENTRY is keyed by the hash of the pair's token ids, which covers the data, the tokenizer and
  max_length — a changed pair simply has no entry.

A run asks for the pairs it will actually visit; only missing entries are computed (the reference is
loaded only then), so a beta re-run over the same pairs never loads or runs the reference model, and
the first run costs no more reference forwards than a live-reference run.

Two runs on one folder at once (two betas in two terminals) may compute entries at the same time: a
save MERGES its new entries into what is on disk under a file lock, so neither run's entries are lost.
Each file carries a SHA-256 of its numbers (verified like a checkpoint's weights): a damaged or edited cache
file (truncated, random bytes, one changed log-prob) is named, set aside and rebuilt, never used.

For the held-out KL(policy ‖ reference) the cache also keeps, for each held-out pair, the reference's
final hidden states at the chosen response's scored positions, plus its LM head: ``hidden @ W.T``
gives back the reference logits there (checked when computed), so the KL needs no reference forward.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.collator import PreferenceDataCollator
from ..infra.atomic import atomic_write_bytes, atomic_write_text
from ..infra.locks import file_lock
from ..infra.precision import choose_precision
from .scored_logprobs import sequence_logprobs_lean

CACHE_DIR = "ref_cache"
CACHE_FORMAT = 3  # 3: files carry a digest of their numbers


def example_hash(ex: dict[str, Any]) -> str:
    """Hash of a tokenized pair's ids: equal ids ⇔ equal reference log-probs (for one checkpoint)."""
    payload = json.dumps([list(ex["prompt_ids"]), list(ex["chosen_ids"]), list(ex["rejected_ids"])])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cache_key(sft_id: str, *, average: bool, precision: str, max_length: int | None) -> dict[str, Any]:
    """What every number in one cache file depends on besides the pair itself, and its hash (the file name)."""
    parts = {
        "format": CACHE_FORMAT,
        "sft_checkpoint": sft_id,
        "average": average,
        "precision": precision,
        "max_length": max_length,
    }
    parts["key"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
    return parts


def cache_path(sft_dir: str | Path, key: dict[str, Any]) -> Path:
    return Path(sft_dir) / CACHE_DIR / f"{key['key']}.pt"


def _empty(key: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "logps": {}, "hidden": {}, "lm_head": None}


def _tensor_bytes(t: torch.Tensor | None) -> bytes:
    return b"none" if t is None else repr((t.dtype, tuple(t.shape))).encode() + t.contiguous().numpy().tobytes()


def content_digest(cache: dict[str, Any]) -> str:
    """SHA-256 of everything a cache file holds: its key, every log-prob, hidden state and the LM head."""
    h = hashlib.sha256(json.dumps(cache["key"], sort_keys=True).encode())
    h.update(json.dumps(sorted((k, list(v)) for k, v in cache["logps"].items())).encode())
    for name in sorted(cache["hidden"]):
        h.update(name.encode() + _tensor_bytes(cache["hidden"][name]))
    head = cache["lm_head"] or {}
    h.update(_tensor_bytes(head.get("weight")) + _tensor_bytes(head.get("bias")))
    return h.hexdigest()


def load_cache_file(sft_dir: str | Path, key: dict[str, Any]) -> dict[str, Any]:
    """The cache file for `key` (empty if none). A file whose recorded key differs is rejected loudly; a damaged
    one (unreadable, not a cache) is renamed to ``<name>.damaged`` with a printed message, and rebuilt."""
    path = cache_path(sft_dir, key)
    if not path.exists():
        return _empty(key)
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)  # data only: a cache file never runs code
        if not (
            isinstance(cache, dict)
            and isinstance(cache.get("key"), dict)
            and isinstance(cache.get("logps"), dict)
            and isinstance(cache.get("hidden"), dict)
        ):
            raise ValueError("not a reference cache")
        if cache.get("digest") != content_digest(cache):
            raise ValueError("its numbers do not match its SHA-256 (edited or corrupted)")
    except Exception as e:  # noqa: BLE001 - truncated, random bytes, another format: every one is rebuilt
        damaged = path.with_name(path.name + ".damaged")
        path.replace(damaged)
        print(
            f"[reference cache] {path} 已損壞（{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}），"
            f"改名為 {damaged.name}，重新計算"
        )
        return _empty(key)
    stored = cache.get("key", {})
    if stored != key:
        diff = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
        raise ValueError(
            f"{path}: reference cache was built for different inputs ({', '.join(diff)}); delete it to rebuild"
        )
    return cache


def save_cache_file(sft_dir: str | Path, cache: dict[str, Any]) -> Path:
    """Merge `cache`'s entries into the file on disk (another run may have added some since it was read), atomically."""
    path = cache_path(sft_dir, cache["key"])
    with file_lock(path.with_name(path.name + ".lock")):  # one saver at a time: read, merge, write
        merged = load_cache_file(sft_dir, cache["key"])
        merged["logps"].update(cache["logps"])
        merged["hidden"].update(cache["hidden"])
        merged["lm_head"] = merged["lm_head"] if merged["lm_head"] is not None else cache["lm_head"]
        merged["digest"] = content_digest(merged)
        buffer = io.BytesIO()
        torch.save(merged, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        summary = {
            **merged["key"],
            "pairs": len(merged["logps"]),
            "held_out_pairs_with_hidden_states": len(merged["hidden"]),
        }
        atomic_write_text(path.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    cache.update({k: merged[k] for k in ("logps", "hidden", "lm_head")})
    return path


@torch.inference_mode()
def _compute(
    reference, tokenizer, examples, *, batch_size, average, device, max_length, want_hidden, precision="auto"
) -> tuple[list, list, bool]:
    """Reference (chosen, rejected) log-probs per example, and hidden states for the KL when asked."""
    reference.eval()
    collate = PreferenceDataCollator(tokenizer, max_length=max_length)
    head = reference.get_output_embeddings()
    chosen = choose_precision(device, precision)
    logps, hidden, hidden_ok = [], [], want_hidden
    for start in range(0, len(examples), batch_size):
        part = examples[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(part).items()}
        with chosen.autocast():
            out = reference(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
                output_hidden_states=hidden_ok,
            )
        c, r = sequence_logprobs_lean(out.logits, batch["input_ids"], batch["loss_mask"], average=average).chunk(2)
        logps += list(zip(c.tolist(), r.tolist()))
        if hidden_ok:
            mask = batch["loss_mask"][:, 1:].bool()
            states = out.hidden_states[-1][:, :-1]
            rows = [states[i][mask[i]].float() for i in range(len(part))]
            rebuilt = head(rows[0].to(head.weight.dtype)).float()  # hidden @ W.T must give the logits back
            tol = chosen.logits_atol  # 16-bit autocast logits are coarser than fp32's
            if not torch.allclose(rebuilt, out.logits[0, :-1][mask[0]].float(), atol=tol, rtol=tol):
                hidden_ok, hidden = False, []
            else:
                hidden += [h.cpu() for h in rows]
    return logps, hidden, hidden_ok


def ensure_reference_logps(
    sft_dir: str | Path,
    key: dict[str, Any],
    train: list[dict],
    held_out: list[dict],
    make_reference: Callable[[], Any],
    *,
    tokenizer,
    batch_size: int,
    device,
    average: bool = False,
    max_length: int | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Cached reference values for `train` and `held_out`, computing (and saving) only what is missing.

    Returns ``{"train": [(c, r)…], "held_out": [(c, r)…], "held_out_hidden": [Tensor…] | None,
    "lm_head": {...} | None, "computed": n, "reference": model-or-None}``. ``make_reference`` is called
    at most once, and only if something is missing.
    """
    cache = load_cache_file(sft_dir, key)
    hashes_train = [example_hash(ex) for ex in train]
    hashes_eval = [example_hash(ex) for ex in held_out]
    missing_train = list({h: ex for h, ex in zip(hashes_train, train) if h not in cache["logps"]}.items())
    missing_eval = list({h: ex for h, ex in zip(hashes_eval, held_out) if h not in cache["hidden"]}.items())
    reference = None
    if missing_train or missing_eval:
        reference = make_reference()
        common = dict(batch_size=batch_size, average=average, device=device, max_length=max_length, precision=precision)
        if missing_train:
            logps, _, _ = _compute(reference, tokenizer, [ex for _, ex in missing_train], want_hidden=False, **common)
            cache["logps"].update({h: v for (h, _), v in zip(missing_train, logps)})
        if missing_eval:
            logps, hidden, ok = _compute(
                reference, tokenizer, [ex for _, ex in missing_eval], want_hidden=True, **common
            )
            cache["logps"].update({h: v for (h, _), v in zip(missing_eval, logps)})
            if ok:
                cache["hidden"].update({h: t for (h, _), t in zip(missing_eval, hidden)})
                head = reference.get_output_embeddings()
                cache["lm_head"] = {
                    "weight": head.weight.detach().float().cpu().clone(),
                    "bias": None if getattr(head, "bias", None) is None else head.bias.detach().float().cpu().clone(),
                }
        save_cache_file(sft_dir, cache)
    have_hidden = all(h in cache["hidden"] for h in hashes_eval) and cache["lm_head"] is not None
    return {
        "train": [cache["logps"][h] for h in hashes_train],
        "held_out": [cache["logps"][h] for h in hashes_eval],
        "held_out_hidden": [cache["hidden"][h] for h in hashes_eval] if have_hidden else None,
        "lm_head": cache["lm_head"] if have_hidden else None,
        "computed": len(missing_train) + len(missing_eval),
        "reference": reference,
    }


def attach_reference_logps(examples: list[dict[str, Any]], logps: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """Copies of `examples` carrying ``ref_chosen_logps`` / ``ref_rejected_logps`` (the collator passes them on)."""
    if len(examples) != len(logps):
        raise ValueError(f"cache has {len(logps)} entries for {len(examples)} examples")
    return [dict(ex, ref_chosen_logps=float(c), ref_rejected_logps=float(r)) for ex, (c, r) in zip(examples, logps)]
