"""Head-to-head comparisons between models: win rate against a reference model, and a round robin for Elo.

Both are built from :func:`dpo_lab.evaluation.judges.compare`, so every judge (gold, reward model, LLM, human)
is counted the same way: random A/B order, ties as half a win, failures kept and reported.
"""

from __future__ import annotations

from itertools import combinations

from .judges import Comparison, Judge, compare
from .winrate import bootstrap_ci, win_rate, wins_ties_losses


def win_rate_row(name: str, comparison: Comparison, *, clusters=None, seed: int = 0, win_rate_fn=win_rate) -> dict:
    """One table row: the win rate of ``name`` (model A of the comparison), its bootstrap 95 % interval (over
    ``clusters``, one label per prompt, when given) and the win / tie / loss counts."""
    outcomes = comparison.outcomes
    judged_clusters = [clusters[j.index] for j in comparison.judgments] if clusters is not None else None
    row = {
        "model": name,
        "judge": comparison.judge,
        "n_judged": len(outcomes),
        "n_requested": comparison.n_requested,
        "errors": len(comparison.errors),
        "first_error": comparison.errors[0] if comparison.errors else None,
    }
    if outcomes:
        low, high = bootstrap_ci(outcomes, clusters=judged_clusters, seed=seed)
        wins, ties, losses = wins_ties_losses(outcomes)
        row.update(
            win_rate=win_rate_fn(outcomes),
            win_ci_low=low,
            win_ci_high=high,
            ties=ties / len(outcomes),
            wins_n=wins,
            ties_n=ties,
            losses_n=losses,
            n_clusters=len(set(judged_clusters)) if judged_clusters is not None else len(outcomes),
        )
    return row


def win_rates_vs(
    judge: Judge,
    prompts: list[str],
    answers: dict[str, list[str]],
    *,
    reference: str = "SFT",
    sanity: dict[str, list[str]] | None = None,
    clusters=None,
    seed: int = 0,
    win_rate_fn=win_rate,
):
    """Each model's win rate against ``reference`` on the same prompts, and the comparisons behind it.

    ``clusters``: one label per prompt (its topic): the intervals resample whole topics.

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
        rows.append(win_rate_row(name, comparisons[name], clusters=clusters, seed=seed, win_rate_fn=win_rate_fn))
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
