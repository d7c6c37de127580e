"""Head-to-head comparisons between models: win rate against a reference model, and a round robin for Elo.

Both are built from :func:`dpo_lab.evaluation.judges.compare`, so every judge (gold, reward model, LLM, human)
is counted the same way: random A/B order, ties as half a win, failures kept and reported.
"""

from __future__ import annotations

from itertools import combinations

from .judges import Comparison, Judge, compare
from .winrate import bootstrap_ci, win_rate


def win_rate_row(name: str, comparison: Comparison, *, seed: int = 0, win_rate_fn=win_rate) -> dict:
    """One table row: the win rate of ``name`` (model A of the comparison) with its bootstrap 95 % interval."""
    outcomes = comparison.outcomes
    row = {
        "model": name,
        "judge": comparison.judge,
        "n_judged": len(outcomes),
        "n_requested": comparison.n_requested,
        "errors": len(comparison.errors),
        "first_error": comparison.errors[0] if comparison.errors else None,
    }
    if outcomes:
        low, high = bootstrap_ci(outcomes, seed=seed)
        row.update(
            win_rate=win_rate_fn(outcomes), win_ci_low=low, win_ci_high=high, ties=outcomes.count("tie") / len(outcomes)
        )
    return row


def win_rates_vs(
    judge: Judge,
    prompts: list[str],
    answers: dict[str, list[str]],
    *,
    reference: str = "SFT",
    sanity: dict[str, list[str]] | None = None,
    seed: int = 0,
    win_rate_fn=win_rate,
):
    """Each model's win rate against ``reference`` on the same prompts, and the comparisons behind it.

    ``sanity`` maps a row name to a second set of the REFERENCE's own answers (e.g. another sampling
    seed): that row is the reference against itself and must come out near 50 % — a judge with a
    position or length bias shows it there first.
    """
    import pandas as pd

    if reference not in answers:
        raise ValueError(f"no answers for the reference model {reference!r} (have: {', '.join(answers)})")
    rows, comparisons = [], {}
    contenders = {name: texts for name, texts in answers.items() if name != reference}
    for name, texts in {**(sanity or {}), **contenders}.items():
        comparisons[name] = compare(judge, prompts, texts, answers[reference], seed=seed)
        rows.append(win_rate_row(name, comparisons[name], seed=seed, win_rate_fn=win_rate_fn))
    return pd.DataFrame(rows), comparisons


def round_robin(judge: Judge, prompts: list[str], answers: dict[str, list[str]], *, seed: int = 0):
    """Every pair of models on every prompt: the games for :func:`dpo_lab.evaluation.elo.elo_ratings`, and the
    comparisons.
    """
    games, comparisons = [], {}
    for a, b in combinations(answers, 2):
        result = compare(judge, prompts, answers[a], answers[b], seed=seed)
        comparisons[(a, b)] = result
        games += [(a, b, outcome) for outcome in result.outcomes]
    return games, comparisons
