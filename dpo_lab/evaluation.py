"""Notebook 04's evaluation of finished runs: which models exist, their held-out numbers, perplexity, saving 04_eval/.

What is measured here needs no judge: the implicit-reward accuracy and margin and the KL that stage
03 recorded on the held-out pairs, and the perplexity of every model on the held-out chosen
responses (the "does DPO cost language-model quality?" question). Judges and win rates build on this.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_directory
from .checkpoints import StaleCheckpointError, read_history, verify_checkpoint
from .collator import SFTDataCollator
from .manifest import build_manifest, read_manifest
from .sft import evaluate_lm_loss
from .tokenization import tokenize_sft_example

EVAL_DIR = "04_eval"
RUN_03 = "03-DPO_Training.ipynb (or `python -m dpo_lab dpo --beta B`)"


def discover_models(run_dir: str | Path) -> tuple[dict[str, Path], list[str]]:
    """``{"SFT": 02_sft, "DPO β=0.1": 03_dpo/beta_0.1, …}`` (betas in increasing order) and the folders skipped, with why.

    A DPO folder counts only if it is complete and was trained from the CURRENT 02_sft and 01_data;
    an incomplete or stale one is listed in the second value, never silently compared.
    """
    from .pipeline import DPO_DIR, RUN_02, SFT_DIR, _data_id

    run_dir = Path(run_dir)
    sft = verify_checkpoint(run_dir / SFT_DIR, produced_by=RUN_02, expected_inputs={"01_data": _data_id(run_dir)})
    models: dict[str, Path] = {"SFT": run_dir / SFT_DIR}
    skipped: list[str] = []
    found = []
    for folder in (run_dir / DPO_DIR).glob("beta_*"):
        try:
            beta = float(folder.name.removeprefix("beta_"))
        except ValueError:
            skipped.append(f"{folder.name}: not a beta folder name")
            continue
        try:
            verify_checkpoint(folder, produced_by=RUN_03, expected_inputs={"01_data": _data_id(run_dir), SFT_DIR: sft["id"]})
        except (FileNotFoundError, StaleCheckpointError) as e:
            skipped.append(f"{folder.name}: {e}")
            continue
        found.append((beta, folder))
    for beta, folder in sorted(found):
        models[f"DPO β={beta:g}"] = folder
    return models, skipped


def summarize_runs(models: dict[str, Path]):
    """One row per model: beta, steps, why training stopped, and the held-out metrics stage 03 recorded.

    The SFT row is the reference itself: reward margin 0, accuracy 0 (strict ">") and KL 0 by definition.
    """
    import pandas as pd

    rows = []
    for name, folder in models.items():
        manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
        metrics = manifest.get("metrics", {})
        if name == "SFT":
            rows.append({"model": name, "beta": None, "steps": len(read_history(folder)), "stop_reason": "—",
                         "heldout_accuracy": 0.0, "heldout_margin": 0.0, "heldout_kl": 0.0,
                         "heldout_dpo_loss": math.log(2), "train_seconds": metrics.get("train_seconds")})
            continue
        final = metrics.get("final_eval", {})
        rows.append({"model": name, "beta": manifest["config"]["beta"], "steps": metrics.get("steps_run"),
                     "stop_reason": metrics.get("stop_reason"),
                     "heldout_accuracy": final.get("eval_rewards/accuracies"), "heldout_margin": final.get("eval_rewards/margins"),
                     "heldout_kl": final.get("eval_kl"), "heldout_dpo_loss": final.get("eval_loss"),
                     "train_seconds": metrics.get("train_seconds")})
    return pd.DataFrame(rows)


def heldout_perplexity(model, tokenizer, pairs: list[dict[str, Any]], *, max_length: int | None, batch_size: int = 16,
                       device=None) -> float:
    """Perplexity of the held-out CHOSEN responses given their prompts (response tokens only, EOS included)."""
    from .runtime import pick_device

    if not pairs:
        raise ValueError("heldout_perplexity() needs at least one pair")
    device = pick_device(device)
    examples = [tokenize_sft_example(tokenizer, p["prompt"], p["chosen"], max_length) for p in pairs]
    model.to(device)
    return evaluate_lm_loss(model, examples, SFTDataCollator(tokenizer, max_length=max_length), batch_size, device)["eval_perplexity"]


def load_eval_model(folder: Path, device=None):
    from transformers import AutoModelForCausalLM

    from .runtime import pick_device

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(pick_device(device)).eval()


def save_evaluation(run_dir: str | Path, config, *, summary, generations=None, figures: dict[str, Any] | None = None,
                    models: dict[str, Path] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``04_eval/`` atomically: summary.csv/json, generations.csv, figures/*.png and a manifest."""
    from .plots import save_figure

    run_dir = Path(run_dir)
    out = run_dir / EVAL_DIR
    inputs = {}
    for name, folder in (models or {}).items():
        inputs[str(Path(folder).relative_to(run_dir))] = read_manifest(folder, produced_by=RUN_03)["id"]
    betas = [float(b) for b in summary["beta"].dropna()]
    with atomic_directory(out) as tmp:
        summary.to_csv(tmp / "summary.csv", index=False)
        records = json.loads(summary.to_json(orient="records"))
        payload = {"models": list(summary["model"]), "betas": betas, "rows": records, **(extra or {})}
        (tmp / "summary.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if generations is not None:
            generations.to_csv(tmp / "generations.csv", index=False)
        for name, fig in (figures or {}).items():
            save_figure(fig, tmp / "figures" / f"{name}.png")
        manifest = build_manifest(EVAL_DIR, config, inputs=inputs, metrics={"betas": betas})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
