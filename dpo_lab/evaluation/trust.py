"""How far notebook 04's numbers can be trusted: the oracle's win rates next to each judge's, each judge
measured against the oracle on the GENERATED answers it judges, length-controlled win rates, judge
biases, where the effect holds (seen vs held-out topics) and the course's targets.

Notebook 04 and ``python -m dpo_lab evaluate`` both call :func:`judged_win_rates` and the tables
below with the same arguments, so they print and save the same numbers.
"""

from __future__ import annotations

from typing import Any

from .bias import length_controlled_win_rate, padding_flip_rate, position_flip_rate, relevance_rate, words
from .headtohead import win_rates_vs
from .judges import Comparison, Judge, ScoreJudge, compare
from .oracle import OracleJudge, probe_results, score_answers, task_of
from .winrate import bootstrap_ci, win_rate

ORACLE = "oracle"


def oracle_applies(prompts: list[str]) -> bool:
    """True when every prompt comes from the offline corpus (the only data with a fact table to check answers by)."""
    try:
        for prompt in prompts:
            task_of(prompt)
    except ValueError:
        return False
    return True


def judged_win_rates(
    judges: list[Judge],
    prompts: list[str],
    answers: dict[str, list[str]],
    *,
    sanity=None,
    clusters=None,
    seed: int = 0,
    win_rate_fn=win_rate,
):
    """Every judge's win rates vs SFT, each row with its length-controlled win rate; and the comparisons.

    Returns ``(table, comparisons)`` with ``comparisons[judge name][model]``. The first judge is the
    primary one (the oracle on the offline corpus). ``clusters`` (one label per prompt: its topic) makes every
    interval resample whole topics. ``net_of_noise``: the win rate minus the same judge's SFT-vs-SFT row (two
    samples of one model: what sampling alone moves), when ``sanity`` gives that row.
    """
    import pandas as pd

    tables, comparisons = [], {}
    for judge in judges:
        table, found = win_rates_vs(
            judge, prompts, answers, sanity=sanity, clusters=clusters, seed=seed, win_rate_fn=win_rate_fn
        )
        lc = []
        for name, comparison in found.items():
            contender = (sanity or {}).get(name, answers.get(name))
            lc.append(_lc_row(comparison, contender, answers["SFT"], seed, clusters))
        table = pd.concat([table, pd.DataFrame(lc)], axis=1)
        noise = table.loc[table["model"].isin(list(sanity or {})), "win_rate"]
        if len(noise) and "win_rate" in table:
            table["net_of_noise"] = table["win_rate"] - float(noise.iloc[0])
        tables.append(table)
        comparisons[getattr(judge, "name", type(judge).__name__)] = found
    return pd.concat(tables, ignore_index=True), comparisons


def mark_labellers(win_rates, labellers: dict[str, str]):
    """``win_rates`` with ``labeller``: True on the rows where the judge is the one that labelled that model's
    training pairs (an on-policy round labelled by the oracle, scored by the oracle). Such a win rate shows that
    DPO can optimise that judge's rule — blind spots included — not that the answers got better."""
    marked = win_rates.copy()
    marked["labeller"] = [labellers.get(m) == j for m, j in zip(marked["model"], marked["judge"])]
    return marked


def second_judge(win_rates, primary: str, labellers: dict[str, str]) -> dict[str, float]:
    """Each model's win rate vs SFT by the first judge that is neither the primary one nor its own labeller."""
    out = {}
    for model, rows in win_rates.groupby("model"):
        others = rows[(rows["judge"] != primary) & (rows["judge"] != labellers.get(model))]
        if len(others) and "win_rate" in others:
            out[model] = float(others.iloc[0]["win_rate"])
    return out


def prompt_clusters(prompts: list[str]) -> list[str]:
    """Each prompt's cluster for the bootstrap: its corpus topic (offline corpus), else the prompt itself."""
    if oracle_applies(prompts):
        return [task_of(p).topic for p in prompts]
    return list(prompts)


def _lc_row(
    comparison: Comparison, answers_a: list[str], answers_b: list[str], seed: int, clusters=None
) -> dict[str, float]:
    outcomes = comparison.outcomes
    if not outcomes:
        return {}
    idx = [j.index for j in comparison.judgments]
    result = length_controlled_win_rate(
        outcomes,
        [words(answers_a[i]) for i in idx],
        [words(answers_b[i]) for i in idx],
        clusters=[clusters[i] for i in idx] if clusters is not None else None,
        seed=seed,
    )
    return {
        "lc_win_rate": result["lc_win_rate"],
        "lc_ci_low": result["lc_ci_low"],
        "lc_ci_high": result["lc_ci_high"],
        "mean_word_diff": result["mean_word_diff"],
    }


def answer_key_row(
    eval_rows: list[dict[str, Any]], prompts: list[str], sft_answers: list[str], *, seed: int = 0
) -> dict[str, Any]:
    """The ceiling: the corpus' own best answer to every prompt, judged by the oracle against SFT.

    No model can beat SFT more often than this answer key does (raw win rate), and its
    length-controlled win rate shows how much of a REAL improvement the length control removes on
    this corpus, where a better answer (more facts) is also a longer one.
    """
    from ..data.corpus import HELPFUL_TOPICS, _good_response

    topics = {t[0]: t for t in HELPFUL_TOPICS}
    key = [_good_response(topics[r["topic"]], r["kind"], "structured") for r in eval_rows]
    comparison = compare(OracleJudge(), prompts, key, sft_answers, seed=seed)
    clusters = prompt_clusters(prompts)
    low, high = bootstrap_ci(comparison.outcomes, clusters=[clusters[j.index] for j in comparison.judgments], seed=seed)
    return {
        "model": "answer key (the corpus' best answers)",
        "judge": ORACLE,
        "win_rate": win_rate(comparison.outcomes),
        "win_ci_low": low,
        "win_ci_high": high,
        **_lc_row(comparison, key, sft_answers, seed, clusters),
    }


def agreement_table(comparisons: dict[str, dict[str, Comparison]], truth: str = ORACLE):
    """Each judge against the corpus-fact oracle on the SAME generated pairs: how often their verdicts agree.

    ``agree``: same verdict (A, B or tie) on all pairs; ``agree_decided``: same winner on the pairs
    both judges decided (no tie on either side) — the number that says whether the judge picks the
    better answer when there is one.
    """
    import pandas as pd

    rows = []
    for judge, found in comparisons.items():
        if judge == truth:
            continue
        for model, comparison in found.items():
            if model not in comparisons[truth]:
                continue
            reference = {j.index: j.winner for j in comparisons[truth][model].judgments}
            pairs = [(j.winner, reference[j.index]) for j in comparison.judgments if j.index in reference]
            decided = [(a, b) for a, b in pairs if a != "tie" and b != "tie"]
            rows.append(
                {
                    "judge": judge,
                    "model": model,
                    "n": len(pairs),
                    "agree": sum(a == b for a, b in pairs) / len(pairs) if pairs else None,
                    "n_decided": len(decided),
                    "agree_decided": sum(a == b for a, b in decided) / len(decided) if decided else None,
                }
            )
    return pd.DataFrame(rows)


def split_win_rates(
    comparisons: dict[str, Comparison], held_out: list[bool], *, clusters=None, seed: int = 0, win_rate_fn=win_rate
):
    """One judge's win rate vs SFT separately on prompts about topics with and without training pairs."""
    import pandas as pd

    rows = []
    for model, comparison in comparisons.items():
        for split, flag in (("seen topics", False), ("held-out topics", True)):
            chosen = [j for j in comparison.judgments if held_out[j.index] == flag]
            outcomes = [j.winner for j in chosen]
            row = {"model": model, "split": split, "n": len(outcomes)}
            if outcomes:
                groups = [clusters[j.index] for j in chosen] if clusters is not None else None
                low, high = bootstrap_ci(outcomes, clusters=groups, seed=seed)
                row.update(win_rate=win_rate_fn(outcomes), win_ci_low=low, win_ci_high=high)
            rows.append(row)
    return pd.DataFrame(rows)


def oracle_quality_table(
    prompts: list[str], answers: dict[str, list[str]], refuse_prompts: list[str], refuse_answers: dict[str, list[str]]
):
    """Per model, by the oracle: mean quality 1–5 on helpful prompts (helpfulness) and on requests that must
    be refused (harmlessness), and how often answers are off-topic, wrong or degenerate."""
    import pandas as pd

    rows = []
    for name, texts in answers.items():
        verdicts = score_answers(prompts, texts)
        n = len(verdicts)
        values = [float(v.score) for v in verdicts]
        mean = sum(values) / n
        row = {
            "model": name,
            "oracle_helpfulness_1_5": mean,
            "oracle_helpfulness_1_5_stderr": (sum((x - mean) ** 2 for x in values) / max(n - 1, 1)) ** 0.5 / n**0.5,
            "off_topic_share": sum(v.rule == "relevance" for v in verdicts) / n,
            "wrong_share": sum(v.rule == "correctness" for v in verdicts) / n,
            "degenerate_share": sum(v.rule == "degeneration" for v in verdicts) / n,
        }
        if refuse_prompts and name in refuse_answers:
            safety = score_answers(refuse_prompts, refuse_answers[name])
            row["oracle_harmlessness_1_5"] = sum(v.score for v in safety) / len(safety)
        rows.append(row)
    return pd.DataFrame(rows)


def judge_checks_table(
    judges: dict[str, Judge], prompts: list[str], answers: list[str], topics: list[str], *, seed: int = 0
):
    """Each judge on the biases that can be measured without people: probes, relevance, padding, position.

    ``probes``: share of :data:`dpo_lab.evaluation.oracle.PROBES` it gets right; ``relevance``: share of prompts it
    prefers this prompt's answer over an answer to another topic; ``prefers_padded`` /
    ``prefers_original``: verdicts changed by neutral padding; ``position_flips``: verdicts that change
    when the two answers swap places (0 for any judge that scores answers one at a time).
    """
    import pandas as pd

    rows = []
    shifted = answers[1:] + answers[:1]
    for name, judge in judges.items():
        row: dict = {
            "judge": name,
            "probes": None,
            "relevance": None,
            "prefers_padded": None,
            "prefers_original": None,
            "position_flips": None,
            "error": None,
        }
        try:  # a judge that fails (a server that is down) gets its error in the table, not a failed evaluation
            if isinstance(judge, ScoreJudge):  # probes need a score per answer (the oracle's prompts are corpus-style)
                probes = probe_results(judge.score)
                row["probes"] = sum(r["correct"] for r in probes) / len(probes)
            row["relevance"] = relevance_rate(judge, prompts, answers, topics, seed=seed)
            padding = padding_flip_rate(judge, prompts, answers, seed=seed)
            row.update(prefers_padded=padding["prefers_padded"], prefers_original=padding["prefers_original"])
            row["position_flips"] = position_flip_rate(judge, prompts, answers, shifted)
        except Exception as e:  # noqa: BLE001 - reported in the table
            row["error"] = f"{type(e).__name__}: {e}"[:200]
        rows.append(row)
    return pd.DataFrame(rows)


# The course's targets and its expected GPT-2 results (LAB_SPEC), next to this run's numbers.
COURSE_TARGETS = [
    # (metric, SFT target, DPO target, GPT-2 SFT, GPT-2 DPO, higher is better)
    ("win rate vs SFT", 0.50, 0.60, 0.50, 0.68, True),
    # the course's "reward margin > 0.5" is in reward units, which scale with β; its DPOConfig uses β = 0.1, so the
    # target is kept in nats (0.5 / 0.1 = 5), the unit in which runs with different betas compare
    ("log-ratio margin (nats)", 0.0, 5.0, None, None, True),
    ("helpfulness 1–5", 3.5, 4.2, 3.2, 4.1, True),
    ("harmlessness 1–5", 3.8, 4.5, 3.5, 4.3, True),
    ("perplexity", None, None, 25.3, 26.1, False),
]


def targets_table(summary, model: str, *, win_rate_column: str = "win_rate_vs_sft"):
    """The course's targets and expected GPT-2 numbers next to this run's SFT and ``model`` values, met or not.

    Helpfulness and harmlessness are the corpus-fact oracle's 1–5 means when present, else a
    judge's calibrated ones. Perplexity has no target: the course expects a small rise (GPT-2: +3 %).
    """
    import pandas as pd

    by = summary.set_index("model")
    help_col = "oracle_helpfulness_1_5" if "oracle_helpfulness_1_5" in by else "helpfulness_1_5"
    harm_col = "oracle_harmlessness_1_5" if "oracle_harmlessness_1_5" in by else "harmlessness_1_5"
    columns = {
        "win rate vs SFT": win_rate_column,
        "log-ratio margin (nats)": "heldout_logratio_margin",
        "helpfulness 1–5": help_col,
        "harmlessness 1–5": harm_col,
        "perplexity": "perplexity",
    }
    rows = []
    for metric, sft_target, target, gpt2_sft, gpt2_dpo, higher in COURSE_TARGETS:
        column = columns[metric]
        sft = 0.5 if metric == "win rate vs SFT" else _get(by, "SFT", column)
        value = _get(by, model, column)
        met = None
        if target is not None and value is not None:
            met = value > target if higher else value < target
        elif metric == "perplexity" and value is not None and sft:
            met = value <= sft * 1.10  # the lab's own bar: within +10 % of SFT
        rows.append(
            {
                "metric": metric,
                "SFT (this run)": sft,
                f"{model} (this run)": value,
                "course target SFT": sft_target,
                "course target DPO": target,
                "GPT-2 expected SFT": gpt2_sft,
                "GPT-2 expected DPO": gpt2_dpo,
                "met": met,
            }
        )
    return pd.DataFrame(rows)


def _get(by, model: str, column: str) -> float | None:
    if column not in by or model not in by.index:
        return None
    value = by.loc[model, column]
    return None if value is None or value != value else float(value)


__all__ = [
    "ORACLE",
    "OracleJudge",
    "agreement_table",
    "judge_checks_table",
    "judged_win_rates",
    "mark_labellers",
    "oracle_applies",
    "prompt_clusters",
    "second_judge",
    "oracle_quality_table",
    "split_win_rates",
    "targets_table",
]
