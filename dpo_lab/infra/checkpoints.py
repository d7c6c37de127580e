"""Checkpoints that hand off between notebooks, and the periodic training state used to resume.

A stage folder (``02_sft/``, ``03_dpo/beta_<b>/``) holds a model + tokenizer loadable with plain
``AutoModelForCausalLM.from_pretrained(folder)``, ``manifest.json`` and ``history.jsonl``. It is written
atomically (temporary folder, then rename) and its manifest records the SHA-256 of every file, so a
folder that was tampered with or half-copied is detected; ``inputs`` records the id of the stage it was
built from, so a folder built from data that has since changed is reported as stale.

The training state (``train_state/``: optimizer, scheduler, RNG, step, history) lives beside it and
is replaced atomically at every save, so a process killed mid-save leaves the previous one loadable.
It is resumed only by the run it was saved for: ``fingerprint.json`` beside it records the stage, the
ids of its inputs and every setting that shapes training (:func:`claim_training_state`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from .atomic import atomic_directory, atomic_write_text, remove_leftovers
from .distributed import is_main_process
from .manifest import MANIFEST, StaleCheckpointError, read_manifest, sha256_file, stage_id, verify_files
from .seeding import rng_state, set_rng_state

HISTORY = "history.jsonl"
TRAIN_STATE = "train_state"
FINGERPRINT = "fingerprint.json"
STATE_DIGESTS = "sha256.json"  # inside train_state/: the SHA-256 of state.pt and history.jsonl


__all__ = ["StaleCheckpointError"]  # defined with the manifests; imported from here by older code


def write_history(folder: str | Path, history: list[dict[str, Any]]) -> Path:
    return atomic_write_text(Path(folder) / HISTORY, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))


def read_history(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_model_checkpoint(
    folder: str | Path,
    model,
    tokenizer,
    manifest: dict[str, Any],
    history: list[dict[str, Any]],
    card: Callable[[dict[str, Any], Path], str] | None = None,
) -> Path:
    """Model (safetensors) + tokenizer + history + manifest with file hashes, in one atomic rename.

    ``card(manifest, folder)``: the text of the folder's ``README.md`` (its model card). The card is
    written after the hashes are taken: a later stage may rewrite it (with win rates) without the
    checkpoint counting as modified.
    """
    from .atomic import match_umask

    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_history(tmp, history)
        for path in tmp.iterdir():
            match_umask(path)  # safetensors writes 0600; the other files are the user's usual 0644
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {**manifest, "files": files}
        manifest["id"] = stage_id(manifest)
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        if card is not None:
            atomic_write_text(tmp / "README.md", card(manifest, folder))
    return folder


def verify_checkpoint(
    folder: str | Path, *, produced_by: str, expected_inputs: dict[str, str] | None = None
) -> dict[str, Any]:
    """The manifest of a complete, unmodified, up-to-date checkpoint — or a clear error saying what to re-run."""
    folder = Path(folder)
    manifest = read_manifest(folder, produced_by=produced_by)
    verify_files(folder, manifest, produced_by=produced_by)
    for stage, expected_id in (expected_inputs or {}).items():
        recorded = manifest.get("inputs", {}).get(stage)
        if recorded != expected_id:
            raise StaleCheckpointError(
                f"{folder} was built from {stage} {recorded!r}, but {stage} is now {expected_id!r}: it is stale."
                f" Re-run {produced_by}."
            )
    return manifest


def load_model_checkpoint(
    folder: str | Path,
    *,
    produced_by: str,
    expected_inputs: dict[str, str] | None = None,
    device: torch.device | str = "cpu",
):
    """``(model, tokenizer, manifest)`` from a verified stage folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = verify_checkpoint(folder, produced_by=produced_by, expected_inputs=expected_inputs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer, manifest


def save_training_state(
    folder: str | Path,
    *,
    model,
    optimizer,
    scheduler,
    step: int,
    history: list[dict[str, Any]],
    rng: dict,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Everything needed to continue a run exactly where it stopped (atomic: the old state survives a crash)."""
    target = Path(folder) / TRAIN_STATE
    with atomic_directory(target) as tmp:
        trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        torch.save(
            {
                "model": trainable,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "rng": rng,
                "extra": extra or {},
            },
            tmp / "state.pt",
        )
        write_history(tmp, history)
        files = {name: sha256_file(tmp / name) for name in ("state.pt", HISTORY)}
        atomic_write_text(tmp / STATE_DIGESTS, json.dumps(files, indent=2, sort_keys=True) + "\n")
    return target


def _state_is_intact(target: Path) -> bool:
    """Every file of a saved training state matches the SHA-256 recorded when it was saved (like a checkpoint)."""
    try:
        files = json.loads((target / STATE_DIGESTS).read_text(encoding="utf-8"))
        return (
            isinstance(files, dict)
            and bool(files)
            and all(sha256_file(target / name) == digest for name, digest in files.items())
        )
    except (OSError, ValueError):
        return False


def load_training_state(folder: str | Path) -> dict[str, Any] | None:
    """The saved state (with its history), or None when the run never saved one."""
    target = Path(folder) / TRAIN_STATE
    if not (target / "state.pt").exists():
        return None
    state = torch.load(target / "state.pt", map_location="cpu", weights_only=False)
    state["history"] = read_history(target)
    return state


def restore_training_state(state: dict[str, Any], *, model, optimizer, scheduler) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["model"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            d
            for key in sorted(set(saved) | set(now))
            for d in _differences(saved.get(key, "<none>"), now.get(key, "<none>"), f"{prefix}{key}.")
        ]
    return [] if saved == now else [f"{prefix.rstrip('.')}: {saved!r} → {now!r}"]


def claim_training_state(state_dir: str | Path, fingerprint: dict[str, Any]) -> str | None:
    """Keep the training state in `state_dir` only if it was saved for this very run, then record this run.

    `fingerprint`: the stage, its inputs' ids and every setting that shapes training (JSON values). A state
    saved for anything else (other steps, other data, another SFT model) is deleted; the reason is returned
    (None when there was nothing to discard). Leftovers of a killed save are removed either way.
    """
    state_dir = Path(state_dir)
    now = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    reason = None
    if (state_dir / TRAIN_STATE).exists() and not _state_is_intact(state_dir / TRAIN_STATE):
        reason = (
            f"{state_dir / TRAIN_STATE}: the saved training state does not match the SHA-256 recorded when it was"
            " saved (edited or damaged)"
        )
    elif (state_dir / TRAIN_STATE).exists():
        try:
            saved = json.loads((state_dir / FINGERPRINT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            reason = (
                f"{state_dir}: the saved training state does not say which run it belongs to"
                f" ({FINGERPRINT} missing or unreadable)"
            )
        else:
            changed = _differences(saved, now)
            if changed:
                reason = (
                    f"{state_dir}: the saved training state belongs to another run ("
                    + "; ".join(changed[:6])
                    + (f"; {len(changed) - 6} more" if len(changed) > 6 else "")
                    + ")"
                )
    if reason:
        shutil.rmtree(state_dir / TRAIN_STATE, ignore_errors=True)
    remove_leftovers(state_dir / TRAIN_STATE)
    atomic_write_text(state_dir / FINGERPRINT, json.dumps(now, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return reason


def resume_training(
    state_dir, *, model, optimizer, scheduler
) -> tuple[int, list[dict[str, Any]], dict[str, Any]] | None:
    """Restore the last periodic state in `state_dir` (weights, optimizer, scheduler, RNG).

    Returns ``(step, history, extra)``, or None when there is nothing to resume.
    """
    state = load_training_state(state_dir) if state_dir else None
    if state is None:
        return None
    restore_training_state(state, model=model, optimizer=optimizer, scheduler=scheduler)
    set_rng_state(state["rng"])
    return state["step"], state["history"], state["extra"]


def save_periodic_state(
    state_dir,
    step: int,
    total_steps: int,
    every: int,
    accelerator,
    *,
    model,
    optimizer,
    scheduler,
    history: list[dict[str, Any]],
    extra: dict[str, Any],
) -> None:
    """Every `every` steps (not at the last one), the main process saves the state; the others wait for it."""
    if not (state_dir and every and step % every == 0 and step < total_steps):
        return
    if is_main_process(accelerator):
        save_training_state(
            state_dir,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            step=step,
            history=history,
            rng=rng_state(),
            extra=extra,
        )
    if accelerator is not None:
        accelerator.wait_for_everyone()
