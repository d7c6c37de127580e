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


def success_and_failure_cases(
    prompts: list[str], answers_model: list[str], answers_reference: list[str], comparison: Comparison, *, k: int = 3
):
    """The ``k`` largest reward gains and the ``k`` largest losses of model A over the reference (needs judge
    scores).
    """
    import pandas as pd

    scored = [j for j in comparison.judgments if j.score_a is not None and j.score_b is not None]
    if not scored:
        raise ValueError(
            f"{comparison.judge} gave no scores: success/failure cases need a score judge (gold or reward model)"
        )
    scored.sort(key=lambda j: j.score_a - j.score_b, reverse=True)
    picks = [("success", j) for j in scored[:k] if j.score_a - j.score_b > 0]
    picks += [("failure", j) for j in scored[::-1][:k] if j.score_a - j.score_b < 0]
    rows = [
        {
            "case": kind,
            "prompt": _short_prompt(prompts[j.index]),
            "model": answers_model[j.index],
            "reference": answers_reference[j.index],
            "model_reward": j.score_a,
            "reference_reward": j.score_b,
            "reward_gain": j.score_a - j.score_b,
        }
        for kind, j in picks
    ]
    return pd.DataFrame(
        rows, columns=["case", "prompt", "model", "reference", "model_reward", "reference_reward", "reward_gain"]
    )


def _short_prompt(prompt: str) -> str:
    """The last human turn of an HH-style transcript (what the answer responds to)."""
    last = prompt.rsplit("Human:", 1)[-1]
    return last.removesuffix("Assistant:").strip()


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if type(value).__name__ in ("bool", "bool_"):  # python or numpy: a yes/no column
        return "是" if value else ""
    if pattern.endswith("d}") and isinstance(value, float) and value.is_integer():
        value = int(value)  # a count column holding a missing value somewhere is stored as floats
    return pattern.format(value) if isinstance(value, (int, float)) else str(value)


def markdown_table(df, columns: dict[str, str], formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    present = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(columns[c] for c in present) + " |", "|" + "---|" * len(present)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], formats.get(c, "{:.3f}")) for c in present) + " |")
    return "\n".join(lines)


def judge_info(accuracy: dict[str, Any]) -> dict[str, Any]:
    """The gold judge's validation numbers, labelled as the report prints them."""
    return {
        "held-out pairs 上與真實品質一致": accuracy.get("vs_quality"),
        "與（有雜訊的）標籤一致": accuracy["vs_labels"],
    }


def build_report(
    run_dir: str | Path, head: list[str], sections: list[list[str]], notes: list[str] | None = None
) -> str:
    """One page of Markdown (zh-TW, as students read it in 04): the verdict first (:func:`report_head`), then each
    step's section in its declared order (:mod:`dpo_lab.evaluation.steps`), then the notes."""
    lines = [f"# Lab-1.7 評估報告 — `{Path(run_dir).name}`", ""] + head
    for section in sections:
        lines += section
    if notes:
        lines += ["", "## 備註", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def report_head(
    *,
    headline: str | None,
    win_rates,
    trained: list[str],
    primary: str | None = None,
    pick: str | None = None,
    kl_limit: float | None = None,
    settings: dict[str, Any] | None = None,
    judge_info: dict[str, Any] | None = None,
) -> list[str]:
    """The verdict a student can repeat (:mod:`dpo_lab.evaluation.headline`), the best trained run by the primary
    judge — ``trained``: every DPO run compared, each loss and round —, the course rule's pick (under
    ``kl_limit``) and how answers
    were made and judged."""
    lines: list[str] = []
    if headline:
        lines += [f"**結論。** {headline}", ""]
    best = win_rates.dropna(subset=["win_rate"]) if "win_rate" in win_rates else win_rates.iloc[0:0]
    if primary:
        best = best[best["judge"] == primary]
    dpo = best[best["model"].isin(trained)]
    if len(dpo):
        top = dpo.loc[dpo["win_rate"].idxmax()]
        truth = "（corpus-fact oracle，依語料的已知事實逐句判分）" if top["judge"] == "oracle" else ""
        lines.append(
            ("" if headline else "**結論。** ")
            + f"依 {top['judge']}{truth}，win rate 最高的 DPO run 是 **{top['model']}**：對 SFT 的 win rate "
            f"{top['win_rate']:.1%}（95 % 信賴區間 "
            f"{top['win_ci_low']:.1%}–{top['win_ci_high']:.1%}，{int(top['n_judged'])} 個 prompt）"
            + (
                f"；控制長度後 {top['lc_win_rate']:.1%}（{top['lc_ci_low']:.1%}–{top['lc_ci_high']:.1%}）"
                if "lc_win_rate" in top and top["lc_win_rate"] == top["lc_win_rate"]
                else ""
            )
            + "。"
        )
    if pick:
        lines.append(f"課程規則（held-out KL < {kl_limit:g} 之下 log-ratio margin（nats）最大）選 **{pick}**。")
    if settings:
        lines.append("回答的生成設定：" + "、".join(f"{k} = {v}" for k, v in settings.items()) + "。")
    if judge_info:
        lines.append("Judge：" + "、".join(f"{k} {_fmt(v, '{:.4g}')}" for k, v in judge_info.items()) + "。")
    return lines


PCT = "{:.0%}"


def win_rate_section(win_rates) -> list[str]:
    return [
        "",
        "## 對 SFT 的 win rate",
        "",
        "區間以**主題**重抽（同一個主題的 prompt 不是獨立的）；"
        "「扣掉雜訊列」是 win rate 減去同一個 judge 的 SFT 兩次取樣互比；"
        "「評審即標註者」標出評審就是標註那個模型訓練資料的 judge 的列（第二輪由 oracle 標註）："
        "那一列只說明模型學會了標註者的規則。",
        "",
        markdown_table(
            win_rates,
            {
                "model": "模型",
                "judge": "judge",
                "win_rate": "win rate",
                "win_ci_low": "區間下界",
                "win_ci_high": "區間上界",
                "lc_win_rate": "控制長度",
                "lc_ci_low": "下界",
                "lc_ci_high": "上界",
                "wins_n": "勝",
                "ties_n": "平",
                "losses_n": "負",
                "net_of_noise": "扣掉雜訊列",
                "labeller": "評審即標註者",
                "n_judged": "比較數",
                "n_clusters": "主題數",
                "errors": "錯誤",
            },
            {
                "win_rate": "{:.1%}",
                "win_ci_low": "{:.1%}",
                "win_ci_high": "{:.1%}",
                "wins_n": "{:d}",
                "ties_n": "{:d}",
                "losses_n": "{:d}",
                "net_of_noise": "{:+.1%}",
                "n_judged": "{:d}",
                "n_clusters": "{:d}",
                "errors": "{:d}",
                "lc_win_rate": "{:.1%}",
                "lc_ci_low": "{:.1%}",
                "lc_ci_high": "{:.1%}",
            },
        ),
    ]


def agreement_section(agreement) -> list[str]:
    return [
        "",
        "## 各 judge 與 oracle 的一致程度（在生成的回答上）",
        "",
        "同一組生成回答對，judge 的判決（A 勝、B 勝或平手）與 oracle 相同的比例；"
        "「雙方都分出勝負時一致」只看兩者都沒判平手的對。",
        "",
        markdown_table(
            agreement,
            {
                "judge": "judge",
                "model": "比較",
                "n": "對數",
                "agree": "一致",
                "n_decided": "雙方都分勝負",
                "agree_decided": "其中一致",
            },
            {"n": "{:d}", "n_decided": "{:d}", "agree": PCT, "agree_decided": PCT},
        ),
    ]


def judge_checks_section(checks) -> list[str]:
    return [
        "",
        "## Judge 的偏誤檢查",
        "",
        "probes：手寫探針答對比例；relevance：偏好「回答這一題」勝過「回答別的主題」的比例（50 % = 分不出切題）；"
        "padding：回答後面加上一句中性的廢話，judge 改判偏好加長版／原版的比例；"
        "position flips：兩個回答交換位置後判決改變的比例。",
        "",
        markdown_table(
            checks,
            {
                "judge": "judge",
                "probes": "probes",
                "relevance": "relevance",
                "prefers_padded": "偏好加長",
                "prefers_original": "偏好原版",
                "position_flips": "position flips",
                "error": "錯誤",
            },
            {"probes": PCT, "relevance": PCT, "prefers_padded": PCT, "prefers_original": PCT, "position_flips": PCT},
        ),
    ]


def ceiling_section(ceiling) -> list[str]:
    row = ceiling.iloc[0]
    return [
        "",
        "上限參考：語料的標準答案（每題都用最好的 structured 回答）"
        f"對 SFT 的 oracle win rate 是 {row['win_rate']:.1%}"
        f"（{row['win_ci_low']:.1%}–{row['win_ci_high']:.1%}），控制長度後只剩 {row['lc_win_rate']:.1%}"
        f"（{row['lc_ci_low']:.1%}–{row['lc_ci_high']:.1%}）：在這份語料裡，好的回答本來就比較長，控制長度也會扣掉真正的進步。",
    ]


def splits_section(splits) -> list[str]:
    return [
        "",
        "## 效果在哪裡成立：見過的主題 vs held-out 主題",
        "",
        "oracle 判定的 win rate（對 SFT），依 prompt 的主題有沒有出現在訓練 pairs 分開：",
        "",
        markdown_table(
            splits,
            {
                "model": "模型",
                "split": "主題",
                "n": "prompt 數",
                "win_rate": "win rate",
                "win_ci_low": "區間下界",
                "win_ci_high": "區間上界",
            },
            {"n": "{:d}", "win_rate": "{:.1%}", "win_ci_low": "{:.1%}", "win_ci_high": "{:.1%}"},
        ),
    ]


def judged_sections(judged: dict[str, Any]) -> list[str]:
    """The win-rate table and how far its judges can be trusted (each part only when it was measured)."""
    lines = win_rate_section(judged["win_rates"])
    parts = (
        ("agreement", agreement_section),
        ("checks", judge_checks_section),
        ("ceiling", ceiling_section),
        ("splits", splits_section),
    )
    for key, render in parts:
        if judged.get(key) is not None and len(judged[key]):
            lines += render(judged[key])
    return lines


def targets_section(t) -> list[str]:
    if t is None or not len(t):
        return []
    model_col = [c for c in t.columns if c.endswith("(this run)") and not c.startswith("SFT")][0]
    return [
        "",
        "## 課程目標與 GPT-2 預期 vs 本次結果",
        "",
        "helpfulness / harmlessness 用 oracle 的 1–5 分（有 oracle 時）；課程的 perplexity 數字是 GPT-2 的尺度，"
        "這裡的模型與 tokenizer 不同，只比相對變化（本 Lab 的標準：不超過 SFT 的 +10 %）。",
        "",
        markdown_table(
            t.assign(met=t["met"].map({True: "✅ 達成", False: "❌ 未達成"}).fillna("—")),
            {
                "metric": "指標",
                "SFT (this run)": "SFT（本次）",
                model_col: model_col.replace(" (this run)", "（本次）"),
                "course target SFT": "課程目標 SFT",
                "course target DPO": "課程目標 DPO",
                "GPT-2 expected SFT": "GPT-2 預期 SFT",
                "GPT-2 expected DPO": "GPT-2 預期 DPO",
                "met": "是否達成",
            },
            {},
        ),
    ]


def chosen_longer_section(share: float | None) -> list[str]:
    if share is None:
        return []
    return [
        "",
        f"訓練資料中 chosen 比 rejected 長的比例：{share:.0%}"
        "（長度偏誤的來源：DPO 學到「長一點比較好」，不一定學到「內容比較好」）。",
    ]


def implicit_by_split_section(table) -> list[str]:
    if table is None or not len(table):
        return []
    return [
        "",
        "held-out pairs 上的 implicit reward（reference = SFT），依主題有沒有出現在訓練 pairs 分開：",
        "",
        markdown_table(
            table,
            {
                "model": "模型",
                "split": "主題",
                "n_pairs": "pairs",
                "accuracy": "accuracy",
                "reward_margin": "reward margin",
                "logratio_margin": "log-ratio margin（nats）",
            },
            {"n_pairs": "{:d}", "logratio_margin": "{:.2f}"},
        ),
    ]


def models_section(summary) -> list[str]:
    return [
        "",
        "## 模型",
        "",
        "reward margin 是 TRL 記錄的 β × log-ratio 差（reward 單位，隨 β 縮放）；"
        "log-ratio margin 是同一個差以 nats 表示，"
        "不同 β 之間只能比較後者。",
        "",
        markdown_table(
            summary,
            {
                "model": "模型",
                "win_rate_vs_sft": "對 SFT win rate",
                "heldout_accuracy": "accuracy",
                "heldout_reward_margin": "reward margin",
                "heldout_logratio_margin": "log-ratio margin（nats）",
                "heldout_kl": "KL（held-out）",
                "sampled_kl": "KL（取樣）",
                "perplexity_change_vs_sft": "Δ perplexity",
                "gold_reward": "gold reward",
                "oracle_helpfulness_1_5": "helpfulness 1–5（oracle）",
                "oracle_harmlessness_1_5": "harmlessness 1–5（oracle）",
                "off_topic_share": "離題",
                "helpfulness_1_5": "helpfulness 1–5（judge）",
                "harmlessness_1_5": "harmlessness 1–5（judge）",
                "refusal_rate": "拒絕率",
                "harmful_compliance_rate": "有害配合率",
                "over_refusal_rate": "過度拒絕率",
                "mean_words": "平均詞數",
            },
            {
                "perplexity_change_vs_sft": "{:+.1%}",
                "mean_words": "{:.1f}",
                "win_rate_vs_sft": "{:.1%}",
                "heldout_logratio_margin": "{:.2f}",
                "off_topic_share": "{:.0%}",
            },
        ),
    ]


def methods_section(methods) -> list[str]:
    if methods is None or not len(methods):
        return []
    return [
        "",
        "## 方法比較（每個 DPO run：loss、β、第幾輪）",
        "",
        "兩個 accuracy 都以 SFT 為 reference 計算 implicit reward（第二輪也是）：accuracy（標籤）對照資料的標籤，"
        "true_accuracy 對照語料已知的**真實品質**（不是有雜訊的標籤）；對第一輪的 win rate 只有第二輪有。",
        "",
        markdown_table(
            methods,
            {
                "model": "模型",
                "loss_type": "loss",
                "beta": "β",
                "round": "輪",
                "win_rate_vs_sft": "對 SFT win rate",
                "win_rate_vs_round1": "對第一輪 win rate",
                "oracle_helpfulness_1_5": "helpfulness 1–5（oracle）",
                "accuracy_vs_labels": "accuracy（標籤）",
                "true_accuracy": "true_accuracy",
                "sampled_kl": "KL（取樣）",
                "mean_words": "平均詞數",
            },
            {
                "beta": "{:g}",
                "round": "{:.0f}",
                "win_rate_vs_sft": "{:.1%}",
                "win_rate_vs_round1": "{:.1%}",
                "mean_words": "{:.1f}",
            },
        ),
    ]


def elo_section(elo) -> list[str]:
    if elo is None or not len(elo):
        return []
    return [
        "",
        "## Elo（所有模型兩兩比較，同一個 judge；SFT = 1000）",
        "",
        markdown_table(
            elo,
            {
                "model": "模型",
                "elo": "Elo",
                "elo_ci_low": "區間下界",
                "elo_ci_high": "區間上界",
                "games": "比較數",
                "score": "得分",
            },
            {"elo": "{:.0f}", "elo_ci_low": "{:.0f}", "elo_ci_high": "{:.0f}", "games": "{:d}", "score": "{:.1%}"},
        ),
    ]


def cases_section(cases) -> list[str]:
    if cases is None or not len(cases):
        return []
    kinds = {"success": "進步", "failure": "退步"}
    lines = ["", "## 相對 SFT 進步與退步最多的回答", ""]
    for _, row in cases.iterrows():
        lines.append(
            f"- **{kinds.get(row['case'], row['case'])}**（reward 差 {row['reward_gain']:+.2f}）— "
            f"*{_one_line(row['prompt'])}*  "
        )
        lines.append(f"  DPO（{row['model_reward']:.2f}）：{_one_line(row['model'])}  ")
        lines.append(f"  SFT（{row['reference_reward']:.2f}）：{_one_line(row['reference'])}")
    return lines


def _one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"
