"""What a reader of notebook 04 takes away: success and failure cases, and a one-page Markdown report.

Cases are chosen automatically from a score judge's comparison of DPO with SFT: the prompts where
DPO's answer gained the most reward over SFT's, and where it lost the most. Reading both keeps the
summary honest — an average win rate hides the answers that got worse.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .judges import Comparison

REPORT_NAME = "report.md"


def success_and_failure_cases(prompts: list[str], answers_model: list[str], answers_reference: list[str], comparison: Comparison,
                              *, k: int = 3):
    """The ``k`` largest reward gains and the ``k`` largest losses of model A over the reference (needs judge scores)."""
    import pandas as pd

    scored = [j for j in comparison.judgments if j.score_a is not None and j.score_b is not None]
    if not scored:
        raise ValueError(f"{comparison.judge} gave no scores: success/failure cases need a score judge (gold or reward model)")
    scored.sort(key=lambda j: j.score_a - j.score_b, reverse=True)
    picks = [("success", j) for j in scored[:k] if j.score_a - j.score_b > 0]
    picks += [("failure", j) for j in scored[::-1][:k] if j.score_a - j.score_b < 0]
    rows = [{"case": kind, "prompt": _short_prompt(prompts[j.index]), "model": answers_model[j.index],
             "reference": answers_reference[j.index], "model_reward": j.score_a, "reference_reward": j.score_b,
             "reward_gain": j.score_a - j.score_b} for kind, j in picks]
    return pd.DataFrame(rows, columns=["case", "prompt", "model", "reference", "model_reward", "reference_reward", "reward_gain"])


def _short_prompt(prompt: str) -> str:
    """The last human turn of an HH-style transcript (what the answer responds to)."""
    last = prompt.rsplit("Human:", 1)[-1]
    return last.removesuffix("Assistant:").strip()


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return pattern.format(value) if isinstance(value, (int, float)) else str(value)


def _table(df, columns: dict[str, str], formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    present = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(columns[c] for c in present) + " |", "|" + "---|" * len(present)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], formats.get(c, "{:.3f}")) for c in present) + " |")
    return "\n".join(lines)


def judge_info(accuracy: dict[str, Any]) -> dict[str, Any]:
    """The gold judge's validation numbers, labelled as the report prints them."""
    return {"held-out pairs 上與真實品質一致": accuracy.get("vs_quality"), "與（有雜訊的）標籤一致": accuracy["vs_labels"]}


def build_report(*, run_dir: str | Path, summary, win_rates, elo=None, cases=None, judge_info: dict[str, Any] | None = None,
                 pick: str | None = None, settings: dict[str, Any] | None = None, notes: list[str] | None = None) -> str:
    """One page of Markdown (zh-TW, as students read it in 04): the verdict first, then the tables, then the cases."""
    lines = [f"# Lab-1.7 評估報告 — `{Path(run_dir).name}`", ""]
    best = win_rates.dropna(subset=["win_rate"]) if "win_rate" in win_rates else win_rates.iloc[0:0]
    dpo = best[best["model"].str.startswith("DPO")]
    if len(dpo):
        top = dpo.loc[dpo["win_rate"].idxmax()]
        lines.append(f"**結論。** 依 {top['judge']}，win rate 最高的 DPO 模型是 **{top['model']}**：對 SFT 的 win rate "
                     f"{top['win_rate']:.1%}（95 % 信賴區間 {top['win_ci_low']:.1%}–{top['win_ci_high']:.1%}，{int(top['n_judged'])} 個 prompt）。")
    if pick:
        lines.append(f"課程規則（held-out KL < 10 之下 log-ratio margin（nats）最大）選 **{pick}**。")
    if settings:
        lines.append("回答的生成設定：" + "、".join(f"{k} = {v}" for k, v in settings.items()) + "。")
    if judge_info:
        lines.append("Judge：" + "、".join(f"{k} {_fmt(v, '{:.4g}')}" for k, v in judge_info.items()) + "。")
    lines += ["", "## 對 SFT 的 win rate", "",
              _table(win_rates, {"model": "模型", "judge": "judge", "win_rate": "win rate", "win_ci_low": "區間下界",
                                 "win_ci_high": "區間上界", "ties": "平手", "n_judged": "比較數", "errors": "錯誤"},
                     {"win_rate": "{:.1%}", "win_ci_low": "{:.1%}", "win_ci_high": "{:.1%}", "ties": "{:.0%}", "n_judged": "{:d}",
                      "errors": "{:d}"})]
    lines += ["", "## 模型", "",
              "reward margin 是 TRL 記錄的 β × log-ratio 差（reward 單位，隨 β 縮放）；log-ratio margin 是同一個差以 nats 表示，"
              "不同 β 之間只能比較後者。", "",
              _table(summary, {"model": "模型", "win_rate_vs_sft": "對 SFT win rate", "heldout_accuracy": "accuracy",
                               "heldout_reward_margin": "reward margin", "heldout_logratio_margin": "log-ratio margin（nats）",
                               "heldout_kl": "KL（held-out）", "sampled_kl": "KL（取樣）", "perplexity_change_vs_sft": "Δ perplexity",
                               "gold_reward": "gold reward", "helpfulness_1_5": "helpfulness 1–5", "harmlessness_1_5": "harmlessness 1–5",
                               "refusal_rate": "拒絕率", "harmful_compliance_rate": "有害配合率",
                               "over_refusal_rate": "過度拒絕率", "mean_words": "平均詞數"},
                     {"perplexity_change_vs_sft": "{:+.1%}", "mean_words": "{:.1f}", "win_rate_vs_sft": "{:.1%}",
                      "heldout_logratio_margin": "{:.2f}"})]
    if elo is not None and len(elo):
        lines += ["", "## Elo（所有模型兩兩比較，同一個 judge；SFT = 1000）", "",
                  _table(elo, {"model": "模型", "elo": "Elo", "elo_ci_low": "區間下界", "elo_ci_high": "區間上界", "games": "比較數",
                               "score": "得分"}, {"elo": "{:.0f}", "elo_ci_low": "{:.0f}", "elo_ci_high": "{:.0f}", "games": "{:d}",
                                                "score": "{:.1%}"})]
    if cases is not None and len(cases):
        kinds = {"success": "進步", "failure": "退步"}
        lines += ["", "## 相對 SFT 進步與退步最多的回答", ""]
        for _, row in cases.iterrows():
            lines.append(f"- **{kinds.get(row['case'], row['case'])}**（reward 差 {row['reward_gain']:+.2f}）— *{_one_line(row['prompt'])}*  ")
            lines.append(f"  DPO（{row['model_reward']:.2f}）：{_one_line(row['model'])}  ")
            lines.append(f"  SFT（{row['reference_reward']:.2f}）：{_one_line(row['reference'])}")
    if notes:
        lines += ["", "## 備註", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"
