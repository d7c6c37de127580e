"""Win rate: how often model A's answer is judged better than model B's, with a bootstrap confidence interval
that resamples whole clusters of related prompts (topics) when it is told them, and the win/tie/loss counts.

One comparison's outcome is 1.0 (A wins), 0.0 (B wins) or 0.5 (tie); the strings "A", "B" and "tie"
are accepted too. Ties count half, so a model compared with itself scores exactly 50 %.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

_OUTCOMES = {"a": 1.0, "b": 0.0, "tie": 0.5}


def _as_score(value, i: int) -> float:
    if isinstance(value, str):
        key = value.strip().lower()
        if key not in _OUTCOMES:
            raise ValueError(f"outcome {i}: {value!r} is not one of 'A', 'B', 'tie'")
        return _OUTCOMES[key]
    score = float(value)
    if score not in (0.0, 0.5, 1.0):
        raise ValueError(f"outcome {i}: {value!r} is not 1 (A wins), 0 (B wins) or 0.5 (tie)")
    return score


def win_rate(outcomes: Iterable) -> float:
    """Share of comparisons A wins, ties counted as half a win: ``(wins + ties / 2) / n``."""
    scores = [_as_score(v, i) for i, v in enumerate(outcomes)]
    if not scores:
        raise ValueError("win_rate() needs at least one outcome")
    return sum(scores) / len(scores)


def bootstrap_ci(
    outcomes: Iterable,
    *,
    clusters: Sequence | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`win_rate`.

    ``clusters`` (one label per outcome, e.g. the prompt's topic): resample whole clusters, not single
    comparisons. Prompts about the same topic are not independent (21 near-identical prompts about one topic
    are closer to one observation than to 21), so resampling them one by one makes the interval too narrow.
    Without ``clusters`` every comparison is its own cluster.
    """
    scores = [_as_score(v, i) for i, v in enumerate(outcomes)]
    if not scores:
        raise ValueError("bootstrap_ci() needs at least one outcome")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    groups = _grouped(scores, clusters)
    rng = random.Random(seed)
    k = len(groups)
    rates = []
    for _ in range(n_boot):
        drawn = rng.choices(groups, k=k)
        total = sum(s for group in drawn for s in group)
        rates.append(total / sum(len(group) for group in drawn))
    rates.sort()
    lo = rates[int((1 - level) / 2 * (n_boot - 1))]
    hi = rates[int((1 + level) / 2 * (n_boot - 1))]
    return lo, hi


def _grouped(values: list, clusters: Sequence | None) -> list[list]:
    """``values`` split by their cluster label (first-seen order), or one group per value."""
    if clusters is None:
        return [[v] for v in values]
    if len(clusters) != len(values):
        raise ValueError(f"{len(clusters)} cluster labels for {len(values)} outcomes")
    groups: dict = {}
    for label, value in zip(clusters, values):
        groups.setdefault(label, []).append(value)
    return list(groups.values())


def wins_ties_losses(outcomes: Iterable) -> tuple[int, int, int]:
    """How many comparisons A won, tied and lost: the counts behind a win rate (57 % of 10 is not 57 % of 1,000)."""
    scores = [_as_score(v, i) for i, v in enumerate(outcomes)]
    return scores.count(1.0), scores.count(0.5), scores.count(0.0)
