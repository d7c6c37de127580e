"""The verdict in one paragraph a student can repeat: win rate with its topic interval, at equal length, under an
unrelated personal detail, and what the wins are made of. Notebook 04's conclusion and the report's first lines
are this paragraph, built from the same numbers.
"""

from __future__ import annotations

from typing import Any

from .oracle import agreement_line, score_answers

# SFT answer defects a DPO answer can win by fixing (the oracle's deciding rule for the SFT answer)
DEFECT_RULES = ("relevance", "correctness", "question", "safety", "degeneration", "deductions", "unverified")


def win_breakdown(prompts: list[str], dpo: list[str], sft: list[str]) -> dict[str, int]:
    """By the oracle, DPO's answers against SFT's on the same prompts. ``fixes``: DPO wins where SFT's answer had a
    defect (off-topic, wrong, not answering, refusing, broken); ``more_facts``: DPO wins where SFT's answer was
    right too and DPO's simply holds more of the topic's facts (and is longer); ``breaks``: DPO losses where DPO's
    answer has the defect."""
    a, b = score_answers(prompts, dpo), score_answers(prompts, sft)
    out = {"wins": 0, "ties": 0, "losses": 0, "fixes": 0, "more_facts": 0, "breaks": 0}
    for va, vb in zip(a, b):
        if va.score > vb.score:
            out["wins"] += 1
            out["fixes" if vb.rule in DEFECT_RULES else "more_facts"] += 1
        elif va.score < vb.score:
            out["losses"] += 1
            out["breaks"] += va.rule in DEFECT_RULES
        else:
            out["ties"] += 1
    return out


def _pct(x: float) -> str:
    return f"{x:.0%}"


def headline(
    model: str,
    rates: dict[str, Any],
    breakdown: dict[str, int],
    *,
    noise: float | None = None,
    counterfactual: dict[str, Any] | None = None,
    n_topics: int | None = None,
) -> str:
    """The paragraph (zh-TW). ``rates``: the oracle's win-rate row for ``model`` (``win_rate``, ``win_ci_low/high``,
    ``lc_win_rate``, ``lc_ci_low/high``, ``n_judged``); ``noise``: the SFT-vs-SFT row's win rate;
    ``counterfactual``: the pooled counterfactual row (``win_vs_sft``, ``win_ci_low/high``)."""
    w, lo, hi = rates["win_rate"], rates["win_ci_low"], rates["win_ci_high"]
    topics = f"、{n_topics} 個主題" if n_topics else ""
    parts = [
        f"**{model} 對 SFT**：依 corpus-fact oracle，win rate {_pct(w)}"
        f"（以**主題**重抽的 95 % 區間 {_pct(lo)}–{_pct(hi)}；"
        f"{breakdown['wins']} 勝 {breakdown['ties']} 平 {breakdown['losses']} 負，{int(rates['n_judged'])} 題{topics}"
        + (f"；同一個 SFT 的兩次取樣互比是 {_pct(noise)}" if noise is not None else "")
        + "）。"
    ]
    if rates.get("lc_win_rate") == rates.get("lc_win_rate") and rates.get("lc_win_rate") is not None:
        lc, lc_lo, lc_hi = rates["lc_win_rate"], rates["lc_ci_low"], rates["lc_ci_high"]
        verdict = (
            "：一樣長時仍然較好，效果不只是變長"
            if lc_lo > 0.5
            else ("：一樣長時反而較差" if lc_hi < 0.5 else "：區間包含 50 %，一樣長時看不出比 SFT 好")
        )
        parts.append(f"兩個回答一樣長時 {_pct(lc)}（{_pct(lc_lo)}–{_pct(lc_hi)}）{verdict}。")
    if counterfactual:
        cf = counterfactual
        interval = f"{_pct(cf['win_ci_low'])}–{_pct(cf['win_ci_high'])}"
        parts.append(f"問題前多一句無關的自我介紹時 {_pct(cf['win_vs_sft'])}（{interval}）。")
    if breakdown["wins"]:
        parts.append(
            f"DPO 贏的 {breakdown['wins']} 題中，{breakdown['fixes']} 題是 SFT 的回答有錯"
            "（離題、說錯、沒回答問題、拒絕或殘缺）而 DPO 答對了，"
            f"{breakdown['more_facts']} 題是兩個都對、DPO 多講了幾個事實（也就比較長）"
            + (
                f"；DPO 輸的 {breakdown['losses']} 題中有 {breakdown['breaks']} 題是 DPO 的回答出錯"
                if breakdown["losses"]
                else ""
            )
            + "。"
        )
    parts.append(f"（{agreement_line()}。）")
    return "".join(parts)
