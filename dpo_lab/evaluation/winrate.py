"""Win rate: how often model A's answer is judged better than model B's, with a bootstrap confidence interval.

One comparison's outcome is 1.0 (A wins), 0.0 (B wins) or 0.5 (tie); the strings "A", "B" and "tie"
are accepted too. Ties count half, so a model compared with itself scores exactly 50 %.
"""

from __future__ import annotations

import random
from typing import Iterable

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


def bootstrap_ci(outcomes: Iterable, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`win_rate` (resample the comparisons with replacement)."""
    scores = [_as_score(v, i) for i, v in enumerate(outcomes)]
    if not scores:
        raise ValueError("bootstrap_ci() needs at least one outcome")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = random.Random(seed)
    n = len(scores)
    rates = sorted(sum(rng.choices(scores, k=n)) / n for _ in range(n_boot))
    lo = rates[int((1 - level) / 2 * (n_boot - 1))]
    hi = rates[int((1 + level) / 2 * (n_boot - 1))]
    return lo, hi
