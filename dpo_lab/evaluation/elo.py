"""Elo ratings from pairwise judgments: one number per model, on the scale chess and Chatbot Arena use.

Elo assumes P(A beats B) = 1 / (1 + 10^((R_B − R_A) / 400)) — the Bradley–Terry model again, with
log-strengths scaled to "Elo points". Classic online Elo updates ratings game by game, so the result
depends on the ORDER of the games; here every judgment is already in hand, so we fit the same model
by maximum likelihood (order-free, as Chatbot Arena does). A tie counts as half a win for each side.
A small Gaussian prior on the ratings keeps them finite when a model wins or loses every game (the
untrained base model does). Ratings are anchored so that ``anchor`` (SFT) has 1000.
"""

from __future__ import annotations

import math
import random
from typing import Iterable

import torch

ELO_SCALE = 400 / math.log(10)  # Elo points per nat of log-strength
_OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}


def _games(games: Iterable) -> list[tuple[str, str, float]]:
    out = []
    for i, game in enumerate(games):
        try:
            a, b, result = game
        except (TypeError, ValueError):
            raise ValueError(f"game {i}: expected (model_a, model_b, outcome), got {game!r}") from None
        if a == b:
            raise ValueError(
                f"game {i}: a model cannot play itself ({a!r}); leave self-comparisons out of the Elo games"
            )
        score = _OUTCOME.get(result, result) if isinstance(result, str) else float(result)
        if score not in (0.0, 0.5, 1.0):
            raise ValueError(f"game {i}: outcome {result!r} is not 'A', 'B', 'tie' (or 1, 0, 0.5)")
        out.append((a, b, score))
    if not out:
        raise ValueError("elo_ratings() needs at least one game")
    return out


def _fit(games: list[tuple[str, str, float]], models: list[str], anchor: str | None, prior: float) -> dict[str, float]:
    index = {m: i for i, m in enumerate(models)}
    ia = torch.tensor([index[a] for a, _, _ in games])
    ib = torch.tensor([index[b] for _, b, _ in games])
    score = torch.tensor([s for _, _, s in games], dtype=torch.float64)
    theta = torch.zeros(len(models), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logit = theta[ia] - theta[ib]
        # binary cross-entropy with soft targets (a tie is 0.5) = the Bradley-Terry log-likelihood
        nll = -(
            score * torch.nn.functional.logsigmoid(logit) + (1 - score) * torch.nn.functional.logsigmoid(-logit)
        ).sum()
        loss = nll + 0.5 * prior * theta.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    theta = theta.detach()
    offset = theta[index[anchor]] if anchor is not None else theta.mean()
    return {m: 1000.0 + ELO_SCALE * float(theta[index[m]] - offset) for m in models}


def elo_ratings(
    games: Iterable,
    *,
    anchor: str | None = None,
    prior: float = 0.01,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
):
    """A table of Elo ratings, one row per model (best first), with bootstrap intervals and game counts.

    ``games`` are ``(model_a, model_b, outcome)`` with outcome "A" / "B" / "tie" (or 1 / 0 / 0.5), the
    same outcomes :func:`dpo_lab.win_rate` takes. ``anchor`` gets exactly 1000 (default: the mean is 1000).
    The interval resamples the games with replacement ``n_boot`` times and refits.
    """
    import pandas as pd

    games = _games(games)
    models = sorted({m for a, b, _ in games for m in (a, b)})
    if anchor is not None and anchor not in models:
        raise ValueError(f"anchor {anchor!r} played no game (models: {', '.join(models)})")
    ratings = _fit(games, models, anchor, prior)
    rng = random.Random(seed)
    boot: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(n_boot):
        sample = rng.choices(games, k=len(games))
        present = sorted({m for a, b, _ in sample for m in (a, b)})
        fitted = _fit(sample, present, anchor if anchor in present else None, prior)
        for m, r in fitted.items():
            boot[m].append(r)
    rows = []
    for m in models:
        played = [(a, b, s) for a, b, s in games if m in (a, b)]
        points = sum(s if a == m else 1 - s for a, b, s in played)
        values = sorted(boot[m])
        lo = values[int((1 - level) / 2 * (len(values) - 1))] if values else float("nan")
        hi = values[int((1 + level) / 2 * (len(values) - 1))] if values else float("nan")
        rows.append(
            {
                "model": m,
                "elo": ratings[m],
                "elo_ci_low": lo,
                "elo_ci_high": hi,
                "games": len(played),
                "score": points / len(played),
            }
        )
    return pd.DataFrame(rows).sort_values("elo", ascending=False, ignore_index=True)


def expected_score(rating_a: float, rating_b: float) -> float:
    """Elo's predicted share of points for A against B (ties counted half)."""
    return 1.0 / (1.0 + 10 ** ((rating_b - rating_a) / 400))
