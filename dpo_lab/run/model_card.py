"""The model card (``README.md``) saved in every checkpoint folder, in Hugging Face's model-card format.

A YAML header the Hub reads (``library_name``, ``pipeline_tag``, ``base_model``, ``datasets``, ``tags``)
and a short body: what the model is, what it was trained on and how, its held-out numbers, how to
chat with it and serve it, and what it must not be used for. Stage 03 writes it with the held-out
metrics it measured; stage 04 rewrites it with the win rates (:func:`write_model_card` again, with
``win_rates``). The card is not one of the files the manifest hashes, so updating it never makes a
checkpoint "modified".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..infra.atomic import atomic_write_text
from .layout import DPO_DIR, SFT_DIR
from .smollm2 import SMOLLM2_ALIAS

CARD = "README.md"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_DATASET = "Anthropic/hh-rlhf"


def _base_model(config: dict[str, Any]) -> str | None:
    name = config.get("model_name")
    if name in ("scratch", "tiny-random"):
        return None  # trained from scratch in 02: there is no base on the Hub
    return SMOLLM2_HUB_ID if name == SMOLLM2_ALIAS else name


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(manifest: dict[str, Any], folder: str | Path, win_rates: dict[str, Any] | None = None) -> str:
    """The card's text for the checkpoint described by ``manifest`` (its ``02_sft`` or ``03_dpo/<run>`` folder).

    ``win_rates``: opponent → a share (0.575) or a ready string ("57.5 %（52.5–62.3 %）")."""
    folder = Path(folder)
    run_dir = folder.parent if folder.name == SFT_DIR else folder.parent.parent
    config, metrics = manifest["config"], manifest.get("metrics", {})
    is_dpo = manifest.get("stage") == DPO_DIR
    lines = [f"# {folder.name}（Lab-1.7 DPO，run `{run_dir.name}`）", "", _what(config, metrics, is_dpo), ""]
    lines += _training_section(config, metrics, is_dpo)
    if win_rates:
        lines += ["", "## 勝率（notebook 04，評審見 04_eval/report.md）", "", "| 對手 | 勝率 |", "|---|---|"]
        lines += [
            f"| {opponent} | {rate if isinstance(rate, str) else f'{rate:.1%}'} |"
            for opponent, rate in win_rates.items()
        ]
    elif is_dpo:
        lines += ["", "勝率：執行 notebook 04（或 `python -m dpo_lab evaluate`）後會寫進這一節。"]
    lines += _usage_section(folder, run_dir, config.get("dataset"))
    return "\n".join(_front_matter(config, is_dpo) + lines) + "\n"


def _front_matter(config: dict[str, Any], is_dpo: bool) -> list[str]:
    """The Hub's YAML header: library, task, base model, data set, tags."""
    base, dataset = _base_model(config), config.get("dataset")
    header = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    if base:
        header.append(f"base_model: {base}")
    if dataset == HUB_DATASET:
        header += ["datasets:", f"- {HUB_DATASET}"]
    return header + ["tags:", "- dpo-lab", "- trl-compatible", "- dpo" if is_dpo else "- sft", "---", ""]


def _what(config: dict[str, Any], metrics: dict[str, Any], is_dpo: bool) -> str:
    """One sentence: what this checkpoint is and where it started from."""
    if not is_dpo:
        return "本 lab 的 SFT 基準模型：在示範回答上做 supervised fine-tuning，也是 DPO 的 reference model 與起點。"
    second = metrics.get("round") == 2
    origin = (
        f"由第一輪 DPO 模型（`{metrics.get('first_round')}`，同時是這一輪的 reference model）出發"
        if second
        else "由本 lab 的 SFT 模型（reference model）出發"
    )
    return (
        origin
        + f"，以 DPO（loss `{config.get('loss_type', 'sigmoid')}`"
        + (f"，label_smoothing ε={config.get('label_smoothing'):g}" if config.get("label_smoothing") else "")
        + f"，β={config['beta']:g}）在偏好資料上訓練"
        + ("；這是第二輪：偏好對由第一輪模型自己生成、由評審標註（on-policy）" if second else "")
        + "。"
    )


def _training_section(config: dict[str, Any], metrics: dict[str, Any], is_dpo: bool) -> list[str]:
    """How it was trained (base, data, profile, seed, steps) and its held-out numbers."""
    base, dataset = _base_model(config), config.get("dataset")
    data = (
        f"`{HUB_DATASET}`（helpful-base + harmless-base）"
        if dataset == HUB_DATASET
        else "本 lab 內建的離線控制語料（程式生成、已知每個回答的品質；約 11 % 的偏好標籤刻意反轉以模擬標註雜訊）"
        if dataset == "offline"
        else f"`{dataset}`"
    )
    lines = [
        "## 訓練",
        "",
        "| 項目 | 值 |",
        "|---|---|",
        f"| base model | {base or '從零訓練（' + str(config.get('n_layer')) + ' 層 decoder，lab 的 BPE tokenizer）'} |",
        f"| 資料 | {data} |",
        f"| profile | {config.get('profile')} |",
        f"| seed | {config.get('seed')} |",
    ]
    if not is_dpo:
        return lines + [
            f"| 步數 | {config.get('sft_steps')} |",
            "",
            "## 評估",
            "",
            f"held-out perplexity（chosen 回答）：{_fmt(metrics.get('best_eval_perplexity'), 2)}",
        ]
    loss, final = config.get("loss_type", "sigmoid"), metrics.get("final_eval", {})
    return lines + [
        f"| loss | `{loss}` |",
        f"| β | {config['beta']:g} |",
        f"| 步數 | {metrics.get('steps_run')}（{metrics.get('stop_reason')}） |",
        f"| learning rate | {config.get('dpo_lr'):g} |",
        "",
        "## 評估（held-out 偏好對）",
        "",
        "| 指標 | 值 |",
        "|---|---|",
        f"| reward accuracy | {_fmt(final.get('eval_rewards/accuracies'))} |",
        f"| log-ratio margin（nats） | {_fmt(final.get('eval_logratios/margins'))} |",
        f"| KL(policy ‖ reference)（nats，teacher-forced） | {_fmt(final.get('eval_kl'))} |",
        f"| loss（`{loss}`） | {_fmt(final.get('eval_loss'))} |",
    ]


def _usage_section(folder: Path, run_dir: Path, dataset: str | None) -> list[str]:
    """How to load, serve and share it, and what it must not be used for."""
    return [
        "",
        "## 使用方式",
        "",
        "tokenizer 內含 chat template，把對話轉成訓練時的 HH 格式（`\\n\\nHuman: …\\n\\nAssistant:`）：",
        "",
        "```python",
        "from transformers import pipeline",
        f'chat = pipeline("text-generation", model="{folder.as_posix()}")',
        'chat([{"role": "user", "content": "What is a lock?"}], max_new_tokens=64)',
        "```",
        "",
        "OpenAI 相容的伺服器（`transformers serve`，只聽本機）："
        f" `python -m dpo_lab serve --run-dir {run_dir.as_posix()} --model {folder.name}`",
        "",
        '上傳到 Hub：`model.push_to_hub("<帳號>/<名稱>")`、`tokenizer.push_to_hub(…)`，'
        "這份 README.md 就是 Hub 上的 model card。",
        "",
        "## 預期用途與限制",
        "",
        "- 教學用：觀察 DPO 如何改變一個小模型的行為。**不可**用於真實對話、建議或任何安全相關決策。",
        "- 模型很小、資料很窄：離線語料以外的問題，回答多半不正確。"
        if dataset == "offline"
        else "- GPT-2 級的小模型：事實常出錯、會編造；HH-RLHF 的偏好也帶著標註者的偏誤。",
        "- 安全拒答只在 lab 的 red-team prompts 上量過，換一種問法就可能失效；上線前務必看 04 的安全數字與失敗案例。",
    ]


def write_model_card(folder: str | Path, manifest: dict[str, Any], win_rates: dict[str, Any] | None = None) -> Path:
    """Write (or rewrite) ``<folder>/README.md`` atomically."""
    return atomic_write_text(Path(folder) / CARD, model_card(manifest, folder, win_rates))
