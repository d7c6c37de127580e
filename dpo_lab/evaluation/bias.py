"""Bias analysis, measured: length, position, relevance and counterfactual prompts.

A win rate is only as good as its judge and its data. Each function here turns one known bias into a
number a student can read next to the win rate:

* **length** — :func:`chosen_longer_share` (is "longer" already baked into the data?),
  :func:`length_controlled_win_rate` (the win rate with the length difference regressed out, as
  length-controlled leaderboards do) and :func:`padding_flip_rate` (does neutral padding change a
  judge's verdict?);
* **position** — :func:`position_flip_rate`: show every pair in both orders; a verdict that changes
  with the order is position bias (100 % for a judge that always picks the first answer);
* **relevance** — :func:`relevance_rate`: does the judge prefer the answer to THIS question over a
  fluent answer to another one?

The counterfactual probe (the same requests with an irrelevant personal detail changed) is its own step:
:mod:`dpo_lab.evaluation.counterfactual`.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from .judges import Judge, compare
from .winrate import _as_score, _grouped

NEUTRAL_PADDING = " To sum up, that is the answer to your question."


def words(text: str) -> int:
    return len(text.split())


def chosen_longer_share(pairs: list[dict[str, Any]]) -> float:
    """Share of preference pairs whose chosen answer has more words than the rejected one (ties count half)."""
    if not pairs:
        raise ValueError("chosen_longer_share() needs pairs")
    score = [
        1.0 if words(p["chosen"]) > words(p["rejected"]) else 0.5 if words(p["chosen"]) == words(p["rejected"]) else 0.0
        for p in pairs
    ]
    return sum(score) / len(score)


def _logistic_fit(x: torch.Tensor, y: torch.Tensor, iters: int = 50, l2: float = 1e-3) -> torch.Tensor:
    """Newton's method for ``y ~ σ(θ0 + θ1·x)`` with soft targets in [0, 1] (ties are 0.5).

    A tiny ridge on the slope only keeps it finite when length separates the outcomes perfectly; the
    intercept is not shrunk, so without length differences σ(θ0) is exactly the raw win rate.
    """
    X = torch.stack([torch.ones_like(x), x], dim=1)
    theta = torch.zeros(2, dtype=torch.float64)
    ridge = torch.diag(torch.tensor([1e-9, l2], dtype=torch.float64))
    for _ in range(iters):
        p = torch.sigmoid(X @ theta)
        grad = X.T @ (p - y) + ridge @ theta
        hess = X.T @ (X * (p * (1 - p)).unsqueeze(1)) + ridge
        step = torch.linalg.solve(hess, grad)
        theta = theta - step
        if step.abs().max() < 1e-10:
            break
    return theta


def length_controlled_win_rate(
    outcomes: list, words_a: list[int], words_b: list[int], *, clusters=None, n_boot: int = 500, seed: int = 0
) -> dict[str, float]:
    """The win rate of A with the length difference regressed out, and its bootstrap 95 % interval.

    Fit ``P(A wins) = σ(θ0 + θ1·tanh((|a| − |b|) / s))`` (``s``: the standard deviation of the length
    differences, so the slope is per "typical" difference), then report ``σ(θ0)``: the predicted win
    rate of two answers of EQUAL length. If A wins only because it is longer, this falls to 50 %;
    if A is better whatever the length, it stays near the raw win rate. The tanh keeps a few very
    long answers from dominating the fit (as AlpacaEval's length-controlled win rate does).
    ``clusters`` (one label per outcome): the interval resamples whole clusters (topics).
    """
    if not (len(outcomes) == len(words_a) == len(words_b)):
        raise ValueError(f"{len(outcomes)} outcomes, {len(words_a)} lengths A, {len(words_b)} lengths B")
    if not outcomes:
        raise ValueError("length_controlled_win_rate() needs outcomes")
    y = torch.tensor([_as_score(o, i) for i, o in enumerate(outcomes)], dtype=torch.float64)
    diff = torch.tensor(words_a, dtype=torch.float64) - torch.tensor(words_b, dtype=torch.float64)
    scale = float(diff.std()) if len(diff) > 1 and float(diff.std()) > 0 else 1.0
    x = torch.tanh(diff / scale)

    def lc(idx: torch.Tensor) -> float:
        return float(torch.sigmoid(_logistic_fit(x[idx], y[idx])[0]))

    everything = torch.arange(len(y))
    theta = _logistic_fit(x, y)
    groups = [torch.tensor(g) for g in _grouped(list(range(len(y))), clusters)]
    gen = torch.Generator().manual_seed(seed)

    def resample() -> torch.Tensor:
        return torch.cat([groups[i] for i in torch.randint(len(groups), (len(groups),), generator=gen).tolist()])

    boots = sorted(lc(resample()) for _ in range(n_boot))
    return {
        "win_rate": float(y.mean()),
        "lc_win_rate": lc(everything),
        "lc_ci_low": boots[int(0.025 * (n_boot - 1))],
        "lc_ci_high": boots[int(0.975 * (n_boot - 1))],
        "length_slope": float(theta[1]),
        "mean_word_diff": float(diff.mean()),
    }


def position_flip_rate(judge: Judge, prompts: list[str], answers_a: list[str], answers_b: list[str]) -> float:
    """Share of pairs whose preferred ANSWER changes when the two are shown in the other order.

    An order-free judge (every score judge: it rates each answer alone) gives 0 %; a judge that
    always picks the first answer gives 100 %. Only judges that see both answers can be above 0.
    """
    if not prompts:
        raise ValueError("position_flip_rate() needs prompts")
    ab = judge.judge_shown(prompts, answers_a, answers_b)
    ba = judge.judge_shown(prompts, answers_b, answers_a)
    same = {"first": "second", "second": "first", "tie": "tie"}  # a verdict on (b, a) that means the same as on (a, b)
    return sum(same[v1] != v2 for (v1, _, _), (v2, _, _) in zip(ab, ba)) / len(prompts)


def padding_flip_rate(
    judge: Judge, prompts: list[str], answers: list[str], padding: str = NEUTRAL_PADDING, *, seed: int = 0
) -> dict[str, float]:
    """Each answer against itself with neutral padding appended: how often does the judge prefer either one?

    The padding adds words and no content, so a length-neutral judge calls every pair a tie.
    ``prefers_padded`` is length bias; ``prefers_original`` is a judge punishing filler.
    """
    result = compare(judge, prompts, [a.rstrip() + padding for a in answers], answers, seed=seed)
    n = len(result.outcomes)
    if not n:
        raise RuntimeError(f"{result.judge} judged none of the {len(prompts)} pairs: {result.errors[:1]}")
    return {
        "prefers_padded": result.outcomes.count("A") / n,
        "prefers_original": result.outcomes.count("B") / n,
        "ties": result.outcomes.count("tie") / n,
        "n": n,
    }


def relevance_rate(judge: Judge, prompts: list[str], answers: list[str], topics: list[str], *, seed: int = 0) -> float:
    """Share of prompts where the judge prefers the answer given to THIS prompt over one given to a prompt on
    another topic (ties count half). 50 % means the judge cannot tell whether an answer is on topic."""
    rng = random.Random(seed)
    others = []
    for i, topic in enumerate(topics):
        candidates = [j for j, t in enumerate(topics) if t != topic]
        if not candidates:
            raise ValueError("relevance_rate() needs prompts on at least two topics")
        others.append(answers[rng.choice(candidates)])
    result = compare(judge, prompts, answers, others, seed=seed)
    if not result.outcomes:
        raise RuntimeError(f"{result.judge} judged none of the {len(prompts)} pairs: {result.errors[:1]}")
    return sum(_as_score(o, i) for i, o in enumerate(result.outcomes)) / len(result.outcomes)
