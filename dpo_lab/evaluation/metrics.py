"""What each model does on held-out data, no judge needed: the implicit-reward numbers stage 03 recorded,
perplexity, the KL to SFT (teacher-forced and sampled), seen vs held-out topics, and the course rule that
picks a beta from them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ..core.collator import SFTDataCollator
from ..core.tokenization import tokenize_sft_example
from ..infra.checkpoints import read_history
from ..run.pipeline import load_eval_model
from ..training.sft import evaluate_lm_loss


def summarize_runs(models: dict[str, Path]):
    """One row per model: beta, steps, why training stopped, and the held-out metrics stage 03 recorded.

    Two margins, two units: ``heldout_reward_margin`` is TRL's ``rewards/margins`` = β × (log-ratio of
    chosen − log-ratio of rejected), in reward units that scale with β; ``heldout_logratio_margin`` is
    the same difference in nats (the reward margin ÷ β), the unit in which runs with different betas
    can be compared. The SFT row is the reference itself: margins 0, accuracy 0 (strict ">") and KL 0.
    """
    import pandas as pd

    rows = []
    for name, folder in models.items():
        manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
        metrics = manifest.get("metrics", {})
        if name == "SFT":
            rows.append(
                {
                    "model": name,
                    "beta": None,
                    "loss_type": None,
                    "round": 0,
                    "steps": len(read_history(folder)),
                    "stop_reason": "—",
                    "heldout_accuracy": 0.0,
                    "heldout_reward_margin": 0.0,
                    "heldout_logratio_margin": 0.0,
                    "heldout_kl": 0.0,
                    "heldout_dpo_loss": math.log(2),
                    "train_seconds": metrics.get("train_seconds"),
                    "labeller": "demonstrations",
                }
            )
            continue
        final = metrics.get("final_eval", {})
        beta = manifest["config"]["beta"]
        margin = final.get("eval_rewards/margins")
        rows.append(
            {
                "model": name,
                "beta": beta,
                "loss_type": manifest["config"].get("loss_type", "sigmoid"),  # older manifests: DPO's loss
                "round": 2 if metrics.get("round") == 2 else 1,
                "steps": metrics.get("steps_run"),
                "stop_reason": metrics.get("stop_reason"),
                "heldout_accuracy": final.get("eval_rewards/accuracies"),
                "heldout_reward_margin": margin,
                "heldout_logratio_margin": None if margin is None else margin / beta,
                "heldout_kl": final.get("eval_kl"),
                "heldout_dpo_loss": final.get("eval_loss"),
                "train_seconds": metrics.get("train_seconds"),
                # who chose "chosen" in its training pairs: a judge scoring this model is then grading its own labels
                "labeller": metrics.get("onpolicy", {}).get("judge") or CORPUS_LABELS,
            }
        )
    return pd.DataFrame(rows)


CORPUS_LABELS = "corpus labels"  # round 1: the data set's own (noisy) preference labels


def heldout_perplexity(
    model, tokenizer, pairs: list[dict[str, Any]], *, max_length: int | None, batch_size: int = 16, device=None
) -> float:
    """Perplexity of the held-out CHOSEN responses given their prompts (response tokens only, EOS included)."""
    from ..infra.device import pick_device

    if not pairs:
        raise ValueError("heldout_perplexity() needs at least one pair")
    device = pick_device(device)
    examples = [tokenize_sft_example(tokenizer, p["prompt"], p["chosen"], max_length) for p in pairs]
    model.to(device)
    return evaluate_lm_loss(model, examples, SFTDataCollator(tokenizer, max_length=max_length), batch_size, device)[
        "eval_perplexity"
    ]


@torch.no_grad()
def sampled_kl(
    policy,
    reference,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 16,
    device=None,
) -> dict[str, float]:
    """Monte-Carlo sequence KL(policy ‖ reference) from the policy's OWN samples (nats per response).

    KL = E_{y ~ π(·|x)} [log π(y|x) − log π_ref(y|x)]: sample one answer per prompt from the policy
    (temperature 1, no top-k/top-p), score it under both models, average the log-ratio. Unlike the
    teacher-forced KL of stage 03 (measured on the data's chosen answers), this is measured where the
    policy actually puts its probability. Answers are cut at ``max_new_tokens`` (the KL of that prefix).
    Returns the mean, its standard error and the number of samples.
    """
    from ..core.collator import PreferenceDataCollator
    from ..fast.scored_logprobs import batch_logprobs
    from ..infra.device import pick_device
    from .generation import generate_ids

    device = pick_device(device)
    samples = generate_ids(
        policy,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        seed=seed,
        batch_size=batch_size,
        device=device,
    )
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


# ---------------------------------------------------------------------------------------------------- per-model tables
def perplexity_table(
    models: dict[str, Path], tokenizer, pairs: list[dict[str, Any]], *, max_length: int | None, device=None
):
    """Held-out perplexity of every model and its change relative to SFT."""
    import pandas as pd

    values = {}
    for name, folder in models.items():
        values[name] = heldout_perplexity(
            load_eval_model(folder, device), tokenizer, pairs, max_length=max_length, device=device
        )
    return pd.DataFrame(
        {
            "model": list(values),
            "perplexity": list(values.values()),
            "perplexity_change_vs_sft": [v / values["SFT"] - 1 for v in values.values()],
        }
    )


def sampled_kl_table(
    models: dict[str, Path], tokenizer, prompts: list[str], *, max_new_tokens: int, seed: int, device=None
):
    """:func:`sampled_kl` of every DPO model against SFT (SFT itself: 0 by definition)."""
    import pandas as pd

    reference = load_eval_model(models["SFT"], device)
    rows = [{"model": "SFT", "sampled_kl": 0.0, "sampled_kl_stderr": 0.0}]
    for name, folder in models.items():
        if name != "SFT":
            estimate = sampled_kl(
                load_eval_model(folder, device),
                reference,
                tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                seed=seed,
                device=device,
            )
            rows.append(
                {
                    "model": name,
                    "sampled_kl": estimate["sampled_kl"],
                    "sampled_kl_stderr": estimate["sampled_kl_stderr"],
                }
            )
    return pd.DataFrame(rows)


@torch.no_grad()
def implicit_reward_by_split(
    models: dict[str, Path],
    tokenizer,
    pairs: list[dict[str, Any]],
    train_topics: set[str],
    *,
    betas: dict[str, float],
    max_length: int | None,
    batch_size: int = 16,
    device=None,
):
    """Held-out implicit-reward accuracy and margins of every DPO model, split by seen vs held-out topics.

    A pair's topic is "seen" when some TRAINING pair has it. The reference is the SFT model, as in 03;
    the numbers use the same definitions as 03's held-out evaluation (accuracy: chosen reward strictly
    above rejected; reward margin = β × log-ratio margin).

    ``true_accuracy`` (offline corpus): the same ranking scored against the responses' TRUE quality
    instead of the (partly flipped) chosen/rejected labels, on the ``n_true_pairs`` pairs whose two
    qualities differ — whether a model learned the quality or the label noise.
    """
    import pandas as pd

    from ..core.collator import PreferenceDataCollator
    from ..core.tokenization import tokenize_pairs
    from ..fast.scored_logprobs import batch_logprobs
    from ..infra.device import pick_device

    device = pick_device(device)
    examples = tokenize_pairs(tokenizer, pairs, max_length)
    has_topics = any(p.get("topic") for p in pairs)  # HH-RLHF has none: one row per model, over all pairs
    seen = [p.get("topic") in train_topics if has_topics else True for p in pairs]
    known = [p.get("chosen_quality") is not None and p.get("rejected_quality") is not None for p in pairs]
    truth = torch.tensor([bool(k and p["chosen_quality"] > p["rejected_quality"]) for k, p in zip(known, pairs)])
    decided = torch.tensor([bool(k and p["chosen_quality"] != p["rejected_quality"]) for k, p in zip(known, pairs)])
    groups = (("seen topics", True), ("held-out topics", False)) if has_topics else (("all pairs", True),)
    collate = PreferenceDataCollator(tokenizer)

    def logratios(model) -> tuple[torch.Tensor, torch.Tensor]:
        model.to(device).eval()
        chosen, rejected = [], []
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
            c, r = batch_logprobs(model, batch)
            chosen.append(c.double().cpu())
            rejected.append(r.double().cpu())
        return torch.cat(chosen), torch.cat(rejected)

    ref_c, ref_r = logratios(load_eval_model(models["SFT"], device))
    rows = []
    for name, folder in models.items():
        if name == "SFT":
            continue
        pol_c, pol_r = logratios(load_eval_model(folder, device))
        margin = (pol_c - ref_c) - (pol_r - ref_r)
        for split, flag in groups:
            idx = torch.tensor([s == flag for s in seen])
            if idx.any():
                m = margin[idx]
                graded = idx & decided
                rows.append(
                    {
                        "model": name,
                        "split": split,
                        "n_pairs": int(idx.sum()),
                        "accuracy": float((m > 0).double().mean()),
                        "logratio_margin": float(m.mean()),
                        "reward_margin": float(betas[name] * m.mean()),
                        "n_true_pairs": int(graded.sum()),
                        "true_accuracy": float(((margin[graded] > 0) == truth[graded]).double().mean())
                        if graded.any()
                        else None,
                    }
                )
    return pd.DataFrame(rows)


def _pooled(table, column: str, weight: str):
    """A per-split column pooled over the splits, weighted by each split's pair count: one value per model."""
    graded = table.dropna(subset=[column])
    return (graded[column] * graded[weight]).groupby(graded["model"]).sum() / graded.groupby("model")[weight].sum()


def methods_table(summary, implicit_by_split, vs_round1=None):
    """One row per DPO run — loss, β, round — with what decides between methods: win rate and oracle quality
    (if measured), accuracy against the labels and against the TRUE quality, sampled KL from SFT, answer length.
    ``labeller`` says who labelled the run's training pairs; ``win_rate_vs_sft_second_judge`` is the win rate by
    a judge that labelled none of them (a round trained on the oracle's labels is not graded by the oracle alone).

    Both accuracies come from :func:`implicit_reward_by_split`, where every model's implicit reward is taken
    against the SFT model. (03's held-out accuracy is against the run's own reference: for a second round that
    is its first round, so it measures the second step only and cannot be set beside the others.)
    """
    import pandas as pd

    rows = summary[summary["model"] != "SFT"].copy()
    if implicit_by_split is not None and len(implicit_by_split):
        pooled = {"accuracy_vs_labels": _pooled(implicit_by_split, "accuracy", "n_pairs")}
        if "true_accuracy" in implicit_by_split:
            pooled["true_accuracy"] = _pooled(implicit_by_split, "true_accuracy", "n_true_pairs")
        rows = rows.merge(pd.DataFrame(pooled), left_on="model", right_index=True, how="left")
    if vs_round1:
        rows["win_rate_vs_round1"] = rows["model"].map(vs_round1)
    columns = [
        "model",
        "loss_type",
        "beta",
        "round",
        "labeller",
        "win_rate_vs_sft",
        "win_ci_low",
        "win_ci_high",
        "win_rate_vs_sft_second_judge",
        "win_rate_vs_round1",
        "oracle_helpfulness_1_5",
        "accuracy_vs_labels",
        "true_accuracy",
        "sampled_kl",
        "mean_words",
    ]
    return pd.DataFrame(rows[[c for c in columns if c in rows]]).reset_index(drop=True)


def frontier_axis(summary) -> dict[str, str]:
    """The frontier's y axis: the corpus-fact oracle's quality when measured, else the gold judge's reward."""
    if "oracle_helpfulness_1_5" in summary:
        return {"reward": "oracle_helpfulness_1_5", "label": "corpus-fact oracle quality 1-5 (mean over prompts)"}
    return {"reward": "gold_reward", "label": "gold-judge reward (mean over prompts)"}


def beta_sweep_rows(summary):
    """The rows the beta sweep and the course rule compare: the first-round runs of DPO's own (sigmoid) loss.
    A variant's loss and a second round's starting point differ, so their margins are not the same quantity."""
    is_sweep = summary["model"].ne("SFT") & summary["loss_type"].eq("sigmoid") & summary["round"].eq(1)
    return summary[is_sweep]


def course_rule_pick(summary, kl_limit: float) -> str | None:
    """The course's rule: among DPO runs with held-out KL < ``kl_limit`` (LabConfig.course_kl_limit: 10), the
    largest held-out margin (None if none).

    The margin compared is the LOG-RATIO margin in nats, not TRL's reward margin: the reward margin is
    β × the log-ratio margin, so across betas it mostly measures β itself (a larger β multiplies a
    smaller movement). KL is in nats too, so the rule trades like against like.
    """
    dpo = beta_sweep_rows(summary)
    eligible = dpo[dpo["heldout_kl"] < kl_limit]
    return None if eligible.empty else str(eligible.loc[eligible["heldout_logratio_margin"].idxmax(), "model"])
