"""Elo ratings: a synthetic tournament with a known order, ties, anchors, and bad games."""

from __future__ import annotations

import random

import pytest

from dpo_lab.evaluation.elo import elo_ratings, expected_score


def _tournament(true: dict[str, float], games_per_pair: int, seed: int = 0, tie_share: float = 0.0):
    rng = random.Random(seed)
    games = []
    names = list(true)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for _ in range(games_per_pair):
                if rng.random() < tie_share:
                    games.append((a, b, "tie"))
                else:
                    games.append((a, b, "A" if rng.random() < expected_score(true[a], true[b]) else "B"))
    return games


def test_known_order_and_values_are_recovered():
    true = {"base": 600.0, "SFT": 1000.0, "DPO β=0.5": 1100.0, "DPO β=0.1": 1200.0}
    table = elo_ratings(_tournament(true, 2000), anchor="SFT", n_boot=20)
    assert list(table["model"]) == ["DPO β=0.1", "DPO β=0.5", "SFT", "base"]
    ratings = dict(zip(table["model"], table["elo"]))
    assert ratings["SFT"] == pytest.approx(1000.0)
    for name, value in true.items():
        assert abs(ratings[name] - value) < 30, (name, ratings[name], value)
    for _, row in table.iterrows():
        assert row["elo_ci_low"] <= row["elo"] + 1e-6 and row["elo"] <= row["elo_ci_high"] + 1e-6
    assert (table["games"] == 6000).all()


def test_ties_pull_ratings_together_and_symmetric_results_give_equal_ratings():
    games = [("x", "y", "A"), ("x", "y", "B")] * 50
    table = elo_ratings(games, n_boot=10)
    assert table["elo"].tolist() == pytest.approx([1000.0, 1000.0], abs=1e-6)
    decisive = elo_ratings([("x", "y", "A")] * 30 + [("x", "y", "B")] * 10, n_boot=0)
    tied = elo_ratings([("x", "y", "A")] * 30 + [("x", "y", "B")] * 10 + [("x", "y", "tie")] * 40, n_boot=0)
    gap = lambda t: t["elo"].max() - t["elo"].min()  # noqa: E731
    assert 0 < gap(tied) < gap(decisive)


def test_a_model_that_never_loses_gets_a_finite_rating():
    table = elo_ratings(
        [("best", "worst", "A")] * 40 + [("best", "mid", "A")] * 20 + [("mid", "worst", "tie")] * 20, n_boot=5
    )
    assert table["model"].tolist()[0] == "best"
    assert table["elo"].map(lambda v: abs(v) < 1e5).all()


def test_bad_games_are_clear_errors():
    with pytest.raises(ValueError, match="at least one game"):
        elo_ratings([])
    with pytest.raises(ValueError, match="cannot play itself"):
        elo_ratings([("SFT", "SFT", "tie")])
    with pytest.raises(ValueError, match="game 1: outcome 'C'"):
        elo_ratings([("a", "b", "A"), ("a", "b", "C")])
    with pytest.raises(ValueError, match="anchor 'zzz'"):
        elo_ratings([("a", "b", "A")], anchor="zzz")
