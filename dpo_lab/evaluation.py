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
            rows.append({"model": name, "beta": None, "steps": len(read_history(folder)), "stop_reason": "—",
                         "heldout_accuracy": 0.0, "heldout_reward_margin": 0.0, "heldout_logratio_margin": 0.0, "heldout_kl": 0.0,
                         "heldout_dpo_loss": math.log(2), "train_seconds": metrics.get("train_seconds")})
            continue
        final = metrics.get("final_eval", {})
        beta = manifest["config"]["beta"]
        margin = final.get("eval_rewards/margins")
        rows.append({"model": name, "beta": beta, "steps": metrics.get("steps_run"),
                     "stop_reason": metrics.get("stop_reason"),
                     "heldout_accuracy": final.get("eval_rewards/accuracies"), "heldout_reward_margin": margin,
                     "heldout_logratio_margin": None if margin is None else margin / beta,
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
                    models: dict[str, Path] | None = None, extra: dict[str, Any] | None = None, tables: dict[str, Any] | None = None,
                    report: str | None = None) -> Path:
    """Write ``04_eval/`` atomically: summary.csv/json, one CSV per extra table, generations.csv, figures/*.png,
    report.md and a manifest. (Human A/B labels live outside, in ``human_ab/``: re-running 04 never touches them.)"""
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
        extra = {k: json.loads(v.to_json(orient="records")) if hasattr(v, "to_json") else v for k, v in (extra or {}).items()}
        payload = {"models": list(summary["model"]), "betas": betas, "rows": records, **extra}
        (tmp / "summary.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if generations is not None:
            generations.to_csv(tmp / "generations.csv", index=False)
        for name, table in (tables or {}).items():
            table.to_csv(tmp / f"{name}.csv", index=False)
        if report is not None:
            (tmp / "report.md").write_text(report, encoding="utf-8")
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


# ---------------------------------------------------------------------------------------------------- per-model tables
def perplexity_table(models: dict[str, Path], tokenizer, pairs: list[dict[str, Any]], *, max_length: int | None, device=None):
    """Held-out perplexity of every model and its change relative to SFT."""
    import pandas as pd

    values = {}
    for name, folder in models.items():
        values[name] = heldout_perplexity(load_eval_model(folder, device), tokenizer, pairs, max_length=max_length, device=device)
    return pd.DataFrame({"model": list(values), "perplexity": list(values.values()),
                         "perplexity_change_vs_sft": [v / values["SFT"] - 1 for v in values.values()]})


def sampled_kl_table(models: dict[str, Path], tokenizer, prompts: list[str], *, max_new_tokens: int, seed: int, device=None):
    """:func:`sampled_kl` of every DPO model against SFT (SFT itself: 0 by definition)."""
    import pandas as pd

    reference = load_eval_model(models["SFT"], device)
    rows = [{"model": "SFT", "sampled_kl": 0.0, "sampled_kl_stderr": 0.0}]
    for name, folder in models.items():
        if name != "SFT":
            estimate = sampled_kl(load_eval_model(folder, device), reference, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  seed=seed, device=device)
            rows.append({"model": name, "sampled_kl": estimate["sampled_kl"], "sampled_kl_stderr": estimate["sampled_kl_stderr"]})
    return pd.DataFrame(rows)


def safety_table(rows: list[dict[str, Any]], answers: dict[str, list[str]]):
    """Refusal, harmful-compliance and over-refusal rates per model (:func:`dpo_lab.safety.safety_report`)."""
    import pandas as pd

    from .safety import safety_report

    return pd.DataFrame([{"model": name, **safety_report(rows, texts)} for name, texts in answers.items()])


def judge_score_table(judge, prompts: list[str], answers: dict[str, list[str]], *, refuse_prompts: list[str] | None = None,
                      refuse_answers: dict[str, list[str]] | None = None):
    """Per model: the judge's mean reward (± standard error) and, when calibrated, helpfulness / harmlessness on 1–5."""
    import pandas as pd

    rows = []
    for name, texts in answers.items():
        rewards = judge.score(prompts, texts).double()
        row = {"model": name, "gold_reward": float(rewards.mean()),
               "gold_reward_stderr": float(rewards.std() / len(rewards) ** 0.5) if len(rewards) > 1 else 0.0}
        if "helpful" in getattr(judge, "calibration", {}):
            row["helpfulness_1_5"] = float(judge.quality_1_5(prompts, texts, "helpful").mean())
        if "harmless" in getattr(judge, "calibration", {}) and refuse_prompts and refuse_answers and name in refuse_answers:
            row["harmlessness_1_5"] = float(judge.quality_1_5(refuse_prompts, refuse_answers[name], "harmless").mean())
        rows.append(row)
    return pd.DataFrame(rows)


def length_table(answers: dict[str, list[str]]):
    """Answer length in words per model (DPO's length bias): mean, median, min, max."""
    import pandas as pd

    rows = []
    for name, texts in answers.items():
        words = pd.Series([len(t.split()) for t in texts], dtype=float)
        rows.append({"model": name, "mean_words": words.mean(), "median_words": words.median(), "min_words": words.min(),
                     "max_words": words.max()})
    return pd.DataFrame(rows)


def with_win_rates(summary, win_rates, judge: str = "gold judge"):
    """The per-model table with one judge's win rate vs SFT (and its interval) as columns: the beta comparison in one table."""
    rows = win_rates[(win_rates["judge"] == judge) & win_rates["model"].isin(summary["model"])]
    columns = {"win_rate": "win_rate_vs_sft", "win_ci_low": "win_ci_low", "win_ci_high": "win_ci_high"}
    return summary.merge(rows[["model", *columns]].rename(columns=columns), on="model", how="left")


COURSE_KL_LIMIT = 10.0


def course_rule_pick(summary) -> str | None:
    """The course's rule: among DPO runs with held-out KL < 10, the largest held-out margin (None if none).

    The margin compared is the LOG-RATIO margin in nats, not TRL's reward margin: the reward margin is
    β × the log-ratio margin, so across betas it mostly measures β itself (a larger β multiplies a
    smaller movement). KL is in nats too, so the rule trades like against like.
    """
    dpo = summary[summary["model"].str.startswith("DPO")]
    eligible = dpo[dpo["heldout_kl"] < COURSE_KL_LIMIT]
    return None if eligible.empty else str(eligible.loc[eligible["heldout_logratio_margin"].idxmax(), "model"])


# ---------------------------------------------------------------------------------------------------- the whole of 04
EVAL_DEFAULTS: dict[str, Any] = dict(
    n_judge_prompts=100,  # held-out helpful prompts: answers judged for win rates, Elo, the frontier
    judge_pairs=2000,  # training pairs the gold judge is fitted on
    max_new_tokens=128,  # complete answers: the corpus' best (structured) answers run up to ~100 tokens
    temperature=0.7,  # answers are sampled (seeded), as in the DPO paper's win-rate evaluations; 0 = greedy
    n_safety=200,  # red-team prompts for the refusal rates
    perplexity_pairs=128,
    n_kl_prompts=32,
    include_base=True,  # the untrained base model joins the Elo round robin
)


def decoding_settings(temperature: float, max_new_tokens: int, seed: int) -> dict[str, Any]:
    """Generation settings for judged answers: greedy at temperature 0, otherwise seeded sampling at that temperature."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        return {"max_new_tokens": max_new_tokens, "do_sample": False}
    return {"max_new_tokens": max_new_tokens, "do_sample": True, "temperature": temperature, "seed": seed}


def evaluate_run(run_dir: str | Path, *, profile: str = "auto", seed: int | None = None, reward_model: str | None = "auto",
                 llm_judge=None, device=None, progress: bool = True, log=print, **params: Any) -> dict[str, Any]:
    """Everything notebook 04 measures, without the notebook: ``python -m dpo_lab evaluate`` runs this.

    Writes ``04_eval/`` (tables as CSV/JSON, figures as PNG, ``report.md``) and returns the tables.
    ``params`` override :data:`EVAL_DEFAULTS`. ``reward_model`` (a Hub id or folder; ``"auto"`` = the
    `gpu` profile's HH-RLHF reward model on `gpu`, none otherwise) and ``llm_judge`` (an
    :class:`dpo_lab.judges.LLMJudge`) add rows judged by those judges next to the gold judge's.
    """
    import pandas as pd

    from .answers import collect_answers, sanity_answers
    from .elo import elo_ratings
    from .headtohead import round_robin, win_rates_vs
    from .judges import GPU_REWARD_MODEL, GoldJudge, RewardModelJudge
    from .pipeline import stage_config
    from .plots import plot_beta_sweep, plot_elo, plot_model_comparison, plot_reward_kl_frontier
    from .prepare import load_prepared_data
    from .report import build_report, judge_info, success_and_failure_cases

    unknown = set(params) - set(EVAL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown evaluation parameter(s) {sorted(unknown)}; known: {sorted(EVAL_DEFAULTS)}")
    p = {**EVAL_DEFAULTS, **params}
    for key in ("n_judge_prompts", "max_new_tokens", "n_kl_prompts", "perplexity_pairs", "judge_pairs"):
        if int(p[key]) < 1:
            raise ValueError(f"{key} must be >= 1 (got {p[key]})")
    prepared = load_prepared_data(run_dir)
    config = stage_config(prepared.config, profile, seed=seed)
    tok = prepared.tokenizer
    models, skipped = discover_models(run_dir)
    for line in skipped:
        log(f"skipped (incomplete or stale): {line}")
    if len(models) == 1:
        raise FileNotFoundError(f"{run_dir}/03_dpo has no finished DPO run: run {RUN_03} first")
    splits = prepared.splits
    prompts = [r["prompt"] for r in splits["eval_prompts"][: p["n_judge_prompts"]]]
    if not prompts:
        raise ValueError(f"{run_dir}/01_data has no evaluation prompts")
    log(f"models: {', '.join(models)}; {len(prompts)} judged prompts")

    summary = summarize_runs(models)
    summary = summary.merge(perplexity_table(models, tok, splits["pairs_test"][: p["perplexity_pairs"]], max_length=config.max_length,
                                             device=device), on="model")
    kl_prompts = [r["prompt"] for r in (splits["eval_prompts"] + splits["redteam_prompts"])[: p["n_kl_prompts"]]]
    summary = summary.merge(sampled_kl_table(models, tok, kl_prompts, max_new_tokens=p["max_new_tokens"], seed=config.seed,
                                             device=device), on="model")

    settings = decoding_settings(p["temperature"], p["max_new_tokens"], config.seed)
    answers = collect_answers(models, tok, prompts, run_dir=run_dir, base_config=config if p["include_base"] else None,
                              device=device, progress=progress, **settings)
    sanity = sanity_answers(models["SFT"], tok, prompts, answers["SFT"], run_dir=run_dir, device=device, **settings)
    trained = {name: answers[name] for name in models}  # without the untrained base
    safety_rows = splits["redteam_prompts"][: p["n_safety"]]
    redteam = collect_answers(models, tok, [r["prompt"] for r in safety_rows], run_dir=run_dir, device=device, progress=progress,
                              **settings) if safety_rows else {}
    if redteam:
        summary = summary.merge(safety_table(safety_rows, redteam)[["model", "refusal_rate", "harmful_compliance_rate",
                                                                    "over_refusal_rate"]], on="model")

    judge = GoldJudge().fit(splits["pairs_train"][: p["judge_pairs"]], seed=config.seed)
    judge_accuracy = judge.pairwise_accuracy(splits["pairs_test"][:400])
    log(f"gold judge held-out accuracy: {judge_accuracy}")
    refuse = [(r["prompt"], i) for i, r in enumerate(safety_rows) if r.get("should_refuse")]
    scores = judge_score_table(judge, prompts, answers,
                               refuse_prompts=[q for q, _ in refuse],
                               refuse_answers={k: [v[i] for _, i in refuse] for k, v in redteam.items()})
    summary = summary.merge(scores, on="model", how="left")
    summary = summary.merge(length_table(trained), on="model")

    win_rates, comparisons = win_rates_vs(judge, prompts, trained, sanity=dict([sanity]), seed=config.seed)
    extra_judges = []
    if reward_model == "auto":
        reward_model = GPU_REWARD_MODEL if config.profile == "gpu" else None
    if reward_model:
        extra_judges.append(RewardModelJudge(reward_model, device=device))
    if llm_judge is not None:
        extra_judges.append(llm_judge)
    for other in extra_judges:
        table, _ = win_rates_vs(other, prompts, trained, seed=config.seed)
        win_rates = pd.concat([win_rates, table], ignore_index=True)
    incomplete = [f"{row['judge']} on {row['model']}: {row['n_judged']} of {row['n_requested']} pairs judged, {row['errors']}"
                  f" error(s), first: {row['first_error']}" for _, row in win_rates.iterrows() if row["errors"]]
    for line in incomplete:
        log(line)

    summary = with_win_rates(summary, win_rates)
    games, _ = round_robin(judge, prompts, answers, seed=config.seed)
    elo = elo_ratings(games, anchor="SFT", seed=config.seed)
    pick = course_rule_pick(summary)
    focus = pick or [m for m in models if m != "SFT"][0]
    cases = success_and_failure_cases(prompts, answers[focus], answers["SFT"], comparisons[focus])
    figures = {"model_comparison": plot_model_comparison(summary), "elo": plot_elo(elo)}
    if len(models) > 2:  # SFT and at least two betas: a sweep to draw (as notebook 04 does)
        figures["beta_sweep"] = plot_beta_sweep(summary, kl_limit=COURSE_KL_LIMIT, pick=pick)
    frontier_rows = summary[["model", "sampled_kl", "sampled_kl_stderr", "gold_reward", "gold_reward_stderr"]]
    figures["reward_kl_frontier"] = plot_reward_kl_frontier(frontier_rows)
    report = build_report(run_dir=run_dir, summary=summary, win_rates=win_rates, elo=elo, cases=cases, pick=pick,
                          judge_info=judge_info(judge_accuracy),
                          settings={"prompts": len(prompts), **settings},
                          notes=[f"skipped: {s}" for s in skipped] + incomplete)
    out = save_evaluation(run_dir, config, summary=summary, models={k: v for k, v in models.items() if k != "SFT"},
                          figures=figures, tables={"win_rates": win_rates, "elo": elo, "cases": cases},
                          generations=_answers_frame(prompts, answers), report=report,
                          extra={"course_rule_pick": pick, "gold_judge": judge_accuracy, "decoding": settings,
                                 "win_rates": win_rates, "elo": elo})
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)
    log(f"saved {out}")
    return {"summary": summary, "win_rates": win_rates, "elo": elo, "cases": cases, "report": report, "out": out,
            "judge_accuracy": judge_accuracy, "pick": pick}


def _answers_frame(prompts: list[str], answers: dict[str, list[str]]):
    from .generation import side_by_side

    return side_by_side(prompts, answers)
