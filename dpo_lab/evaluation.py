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
    """A saved model (SFT or a DPO beta) in eval mode, fp32 weights, on the lab's device."""
    from .pipeline import load_reference_model
    from .runtime import pick_device

    return load_reference_model(folder, pick_device(device)).eval()


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


@torch.no_grad()
def sampled_kl(policy, reference, tokenizer, prompts: list[str], *, max_new_tokens: int = 64, seed: int = 0,
               batch_size: int = 16, device=None) -> dict[str, float]:
    """Monte-Carlo sequence KL(policy ‖ reference) from the policy's OWN samples (nats per response).

    KL = E_{y ~ π(·|x)} [log π(y|x) − log π_ref(y|x)]: sample one answer per prompt from the policy
    (temperature 1, no top-k/top-p), score it under both models, average the log-ratio. Unlike the
    teacher-forced KL of stage 03 (measured on the data's chosen answers), this is measured where the
    policy actually puts its probability. Answers are cut at ``max_new_tokens`` (the KL of that prefix).
    Returns the mean, its standard error and the number of samples.
    """
    from .collator import PreferenceDataCollator
    from .generation import generate_ids
    from .losses import batch_logprobs
    from .runtime import pick_device

    device = pick_device(device)
    samples = generate_ids(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=True, seed=seed,
                           batch_size=batch_size, device=device)
    examples = [{"prompt_ids": p, "chosen_ids": y, "rejected_ids": y} for p, y in samples if y]
    if not examples:
        raise ValueError("the policy produced no tokens for any prompt")
    collate = PreferenceDataCollator(tokenizer)
    modes = (policy.training, reference.training)
    policy.to(device).eval()  # eval mode: dropout would add noise to both log-probs (and a KL > 0 between equal models)
    reference.to(device).eval()
    ratios: list[float] = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
        policy_logps, _ = batch_logprobs(policy, batch)
        reference_logps, _ = batch_logprobs(reference, batch)
        ratios += (policy_logps - reference_logps).tolist()
    policy.train(modes[0])
    reference.train(modes[1])
    n = len(ratios)
    mean = sum(ratios) / n
    std = (sum((r - mean) ** 2 for r in ratios) / max(n - 1, 1)) ** 0.5
    return {"sampled_kl": mean, "sampled_kl_stderr": std / n**0.5, "n_samples": n}
