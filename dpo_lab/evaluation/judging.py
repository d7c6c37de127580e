"""The answers' tables and every judgement: safety rates, lengths, judge scores, win rates (oracle first on the
offline corpus), and the tables 04 saves."""

from __future__ import annotations

from typing import Any


def safety_table(rows: list[dict[str, Any]], answers: dict[str, list[str]]):
    """Refusal, harmful-compliance and over-refusal rates per model
    (:func:`dpo_lab.evaluation.safety.safety_report`).
    """
    import pandas as pd

    from .safety import safety_report

    return pd.DataFrame([{"model": name, **safety_report(rows, texts)} for name, texts in answers.items()])


def judge_score_table(
    judge,
    prompts: list[str],
    answers: dict[str, list[str]],
    *,
    refuse_prompts: list[str] | None = None,
    refuse_answers: dict[str, list[str]] | None = None,
):
    """Per model: the judge's mean reward (± standard error) and, when calibrated, helpfulness / harmlessness on 1–5."""
    import pandas as pd

    rows = []
    for name, texts in answers.items():
        rewards = judge.score(prompts, texts).double()
        row = {
            "model": name,
            "gold_reward": float(rewards.mean()),
            "gold_reward_stderr": float(rewards.std() / len(rewards) ** 0.5) if len(rewards) > 1 else 0.0,
        }
        if "helpful" in getattr(judge, "calibration", {}):
            row["helpfulness_1_5"] = float(judge.quality_1_5(prompts, texts, "helpful").mean())
        if (
            "harmless" in getattr(judge, "calibration", {})
            and refuse_prompts
            and refuse_answers
            and name in refuse_answers
        ):
            row["harmlessness_1_5"] = float(judge.quality_1_5(refuse_prompts, refuse_answers[name], "harmless").mean())
        rows.append(row)
    return pd.DataFrame(rows)


def length_table(answers: dict[str, list[str]]):
    """Answer length in words per model (DPO's length bias): mean, median, min, max."""
    import pandas as pd

    rows = []
    for name, texts in answers.items():
        words = pd.Series([len(t.split()) for t in texts], dtype=float)
        rows.append(
            {
                "model": name,
                "mean_words": words.mean(),
                "median_words": words.median(),
                "min_words": words.min(),
                "max_words": words.max(),
            }
        )
    return pd.DataFrame(rows)


def with_win_rates(summary, win_rates, judge: str = "gold judge"):
    """The per-model table with one judge's win rate vs SFT (and its interval) as columns: the beta comparison in one
    table.
    """
    rows = win_rates[(win_rates["judge"] == judge) & win_rates["model"].isin(summary["model"])]
    columns = {"win_rate": "win_rate_vs_sft", "win_ci_low": "win_ci_low", "win_ci_high": "win_ci_high"}
    if "lc_win_rate" in rows:
        columns["lc_win_rate"] = "lc_win_rate_vs_sft"
    return summary.merge(rows[["model", *columns]].rename(columns=columns), on="model", how="left")


def judge_answers(
    prompts: list[str],
    eval_rows: list[dict[str, Any]],
    answers: dict[str, list[str]],
    *,
    sanity: dict[str, list[str]],
    safety_rows: list[dict[str, Any]],
    redteam: dict[str, list[str]],
    train_pairs: list[dict[str, Any]],
    test_pairs: list[dict[str, Any]],
    extra_judges=(),
    seed: int = 0,
    win_rate_fn=None,
) -> dict[str, Any]:
    """Every judgement notebook 04 §5 shows, in one place (the notebook and the CLI call this).

    * the corpus-fact oracle (offline corpus only) and the learned gold judge — fitted with the
      relevance fix, and once without it to show before/after — plus ``extra_judges`` (reward model,
      LLM): win rates vs SFT, raw and length-controlled, each with a 95 % interval;
    * the primary judge: the oracle where it applies, else the first extra judge (the `gpu` profile's
      reward model), else the gold judge;
    * each judge's agreement with the oracle on the generated pairs, its bias checks, the oracle's win
      rates on seen vs held-out topics, and per-model scores (oracle and judge).
    """

    from .judges import GoldJudge
    from .oracle import OracleJudge
    from .trust import (
        ORACLE,
        judge_checks_table,
        judged_win_rates,
        oracle_applies,
        oracle_quality_table,
        prompt_clusters,
    )
    from .winrate import win_rate

    win_rate_fn = win_rate_fn or win_rate
    trained = {name: texts for name, texts in answers.items() if name != "base"}
    judge = GoldJudge().fit(train_pairs, seed=seed)
    before = GoldJudge(judge.encoder).fit(train_pairs, seed=seed, off_topic_negatives=False)
    before.name = "gold judge (before the relevance fix)"
    use_oracle = oracle_applies(prompts)
    judges = ([OracleJudge()] if use_oracle else []) + [judge] + list(extra_judges)
    primary = ORACLE if use_oracle else (extra_judges[0].name if extra_judges else judge.name)
    clusters = prompt_clusters(prompts)  # topics: prompts about one topic are not independent
    win_rates, comparisons = judged_win_rates(
        judges, prompts, trained, sanity=sanity, clusters=clusters, seed=seed, win_rate_fn=win_rate_fn
    )
    refuse = [i for i, r in enumerate(safety_rows) if r.get("should_refuse")]
    refuse_prompts = [safety_rows[i]["prompt"] for i in refuse]
    refuse_answers = {name: [texts[i] for i in refuse] for name, texts in redteam.items()}
    scores = judge_score_table(judge, prompts, answers, refuse_prompts=refuse_prompts, refuse_answers=refuse_answers)
    out = {
        "judge": judge,
        "judge_accuracy": judge.pairwise_accuracy(test_pairs),
        "judge_accuracy_before_fix": before.pairwise_accuracy(test_pairs),
        "primary": primary,
        "win_rates": win_rates,
        "comparisons": comparisons,
        "judges": {getattr(j, "name", type(j).__name__): j for j in judges},
    }
    topics = [r.get("topic") or r["prompt"] for r in eval_rows]
    checks = {ORACLE: judges[0]} if use_oracle else {}
    checks.update({judge.name: judge, before.name: before, **{j.name: j for j in extra_judges}})
    out["checks"] = judge_checks_table(checks, prompts, answers["SFT"], topics, seed=seed)
    if use_oracle:
        scores = scores.merge(oracle_quality_table(prompts, answers, refuse_prompts, refuse_answers), on="model")
        out.update(
            _against_the_oracle(
                before, comparisons, prompts, eval_rows, answers, sanity=sanity, clusters=clusters, seed=seed,
                win_rate_fn=win_rate_fn,
            )
        )  # fmt: skip
    out["scores"] = scores
    return out


def _against_the_oracle(before, comparisons, prompts, eval_rows, answers, *, sanity, clusters, seed, win_rate_fn):
    """Where the oracle judges: each judge's agreement with it (the gold judge before its fix too), its win rates on
    seen vs held-out topics, and the answer key's ceiling."""
    import pandas as pd

    from .headtohead import win_rates_vs
    from .trust import ORACLE, agreement_table, answer_key_row, split_win_rates

    trained = {name: texts for name, texts in answers.items() if name != "base"}
    _, before_comparisons = win_rates_vs(
        before, prompts, trained, sanity=sanity, clusters=clusters, seed=seed, win_rate_fn=win_rate_fn
    )
    held_out_topic = [bool(r.get("held_out_topic")) for r in eval_rows]
    return {
        "agreement": agreement_table({**comparisons, before.name: before_comparisons}),
        "splits": split_win_rates(
            comparisons[ORACLE], held_out_topic, clusters=clusters, seed=seed, win_rate_fn=win_rate_fn
        ),
        "ceiling": pd.DataFrame([answer_key_row(eval_rows, prompts, answers["SFT"], seed=seed)]),
    }


def case_comparisons(judged: dict[str, Any]) -> dict[str, Any]:
    """The comparisons the success/failure cases are read from: the primary judge's when it scores answers, else the
    gold judge's.
    """
    primary = judged["comparisons"][judged["primary"]]
    if all(j.score_a is not None for c in primary.values() for j in c.judgments):
        return primary
    return judged["comparisons"][judged["judge"].name]
