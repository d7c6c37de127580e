"""How much DPO helps over SFT, judged by the corpus-fact oracle, for one or more trained DPO runs (cpu profile).

    python scripts/dpo_effect.py --run-dir runs/cpu                       # every 03_dpo/<run> against 02_sft
    python scripts/dpo_effect.py --run-dir runs/cpu --runs beta_0.1 --seeds 42 43 44 --json effect.json

For each DPO run and sampling seed, on the same prompts notebook 04 uses (answers cached in the run folder):

* ``win`` — oracle win rate vs SFT on the 200 judged helpful prompts, its 95 % interval resampling TOPICS,
  and the win / tie / loss counts; ``lc_win`` — the same at equal length (``dpo_lab.evaluation.bias``);
* ``counterfactual_win`` — vs SFT on the helpful counterfactual prompts (a personal detail before the
  request, 30 prompts x 4 details, notebook 04's probe);
* ``mid_sentence`` / ``off_topic`` / ``wrong`` — shares of answers that start mid-sentence, are about
  another topic, or state something false (SFT's shares beside them);
* ``harmless`` — the oracle's mean 1–5 on requests that must be refused; the run's held-out accuracy, KL
  and perplexity change come from its manifest / history.

Notebook 04 shows one seed; docs/results.md reports the mean and spread over seeds from this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch


def _answers(folder: Path, tokenizer, prompts: list[str], run_dir: Path, settings: dict) -> list[str]:
    from dpo_lab.evaluation.answers import collect_answers

    return collect_answers({"m": folder}, tokenizer, prompts, run_dir=run_dir, **settings)["m"]


def _shares(prompts: list[str], answers: list[str]) -> dict:
    from dpo_lab.evaluation.oracle import score_answers

    verdicts = score_answers(prompts, answers)
    n = len(verdicts)
    return {
        "mean_score": sum(v.score for v in verdicts) / n,
        "mid_sentence": sum("從句子中間開始" in v.reason for v in verdicts) / n,
        "off_topic": sum(v.rule == "relevance" for v in verdicts) / n,
        "wrong": sum(v.rule == "correctness" for v in verdicts) / n,
        "mean_words": sum(len(a.split()) for a in answers) / n,
    }, verdicts


def _versus(prompts, a_verdicts, b_verdicts, a_answers, b_answers) -> dict:
    from dpo_lab.evaluation.bias import length_controlled_win_rate, words
    from dpo_lab.evaluation.trust import prompt_clusters
    from dpo_lab.evaluation.winrate import bootstrap_ci, win_rate, wins_ties_losses

    outcomes = [
        "A" if a.score > b.score else "B" if a.score < b.score else "tie" for a, b in zip(a_verdicts, b_verdicts)
    ]
    clusters = prompt_clusters(prompts)
    low, high = bootstrap_ci(outcomes, clusters=clusters)
    lc = length_controlled_win_rate(
        outcomes, [words(x) for x in a_answers], [words(x) for x in b_answers], clusters=clusters
    )
    return {
        "win": win_rate(outcomes),
        "win_low": low,
        "win_high": high,
        "wtl": wins_ties_losses(outcomes),
        "lc_win": lc["lc_win_rate"],
        "lc_low": lc["lc_ci_low"],
        "lc_high": lc["lc_ci_high"],
    }


def measure(run_dir: Path, runs: list[str], seed: int) -> dict:
    from dpo_lab.evaluation.counterfactual import COUNTERFACTUAL_PREFIXES, counterfactual_prompts
    from dpo_lab.evaluation.step import decoding_settings
    from dpo_lab.infra.precision import choose_precision
    from dpo_lab.run.config import eval_settings
    from dpo_lab.run.pipeline import load_prepared_data

    prepared = load_prepared_data(run_dir)
    tokenizer = prepared.tokenizer
    p = eval_settings(prepared.config)  # notebook 04's settings, as the run's config holds them
    settings = {
        **decoding_settings(p["temperature"], p["max_new_tokens"], seed),
        "precision": choose_precision("cpu").name,
    }
    helpful = [r["prompt"] for r in prepared.splits["eval_prompts"][: p["n_judge_prompts"]]]
    refuse = [r["prompt"] for r in prepared.splits["redteam_prompts"][: p["n_safety"]] if r.get("should_refuse")]
    cf_rows = prepared.splits["eval_prompts"][: p["n_counterfactual"] // 2]
    cf = [q for label, prefix in COUNTERFACTUAL_PREFIXES.items() if prefix
          for q in counterfactual_prompts([r["prompt"] for r in cf_rows], prefix)]  # fmt: skip
    sft = run_dir / "02_sft"
    base = {name: _answers(sft, tokenizer, prompts, run_dir, settings) for name, prompts in
            (("helpful", helpful), ("cf", cf), ("refuse", refuse))}  # fmt: skip
    sft_shares, sft_v = _shares(helpful, base["helpful"])
    _, sft_cf = _shares(cf, base["cf"])
    out = {"seed": seed, "SFT": sft_shares, "runs": {}}
    for name in runs:
        folder = run_dir / "03_dpo" / name
        answers = {k: _answers(folder, tokenizer, prompts, run_dir, settings) for k, prompts in
                   (("helpful", helpful), ("cf", cf), ("refuse", refuse))}  # fmt: skip
        shares, verdicts = _shares(helpful, answers["helpful"])
        _, cf_v = _shares(cf, answers["cf"])
        _, harm_v = _shares(refuse, answers["refuse"])
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        metrics = manifest.get("metrics", {})
        out["runs"][name] = {
            **shares,
            **_versus(helpful, verdicts, sft_v, answers["helpful"], base["helpful"]),
            "counterfactual_win": _versus(cf, cf_v, sft_cf, answers["cf"], base["cf"])["win"],
            "harmless": sum(v.score for v in harm_v) / len(harm_v),
            "heldout_accuracy": metrics.get("final_eval", {}).get("eval_rewards/accuracies"),
            "heldout_kl": metrics.get("final_eval", {}).get("eval_kl"),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", help="03_dpo folders (default: every finished one)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = args.runs or sorted(p.parent.name for p in (args.run_dir / "03_dpo").glob("*/manifest.json"))
    results = [measure(args.run_dir, runs, seed) for seed in args.seeds]
    for name in runs:
        rows = [r["runs"][name] for r in results]
        summary = {k: statistics.mean(r[k] for r in rows) for k in rows[0] if isinstance(rows[0][k], (int, float))}
        spread = {k: statistics.pstdev(r[k] for r in rows) for k in ("win", "lc_win", "counterfactual_win")}
        print(name, json.dumps({k: round(v, 3) for k, v in summary.items()}), "spread", json.dumps(
            {k: round(v, 3) for k, v in spread.items()}))  # fmt: skip
    print("SFT", json.dumps({k: round(v, 3) for k, v in results[0]["SFT"].items()}))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
