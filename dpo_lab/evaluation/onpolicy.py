"""Iterative (on-policy) DPO: the model writes its own preference data, a judge labels it, one more round.

Round 1 learned from pairs someone else wrote. Here a finished DPO run answers TRAINING prompts twice
(sampled), the lab's best available judge scores each answer — the corpus-fact oracle on the offline
corpus, otherwise a reward model — and the better answer becomes ``chosen``. Equal scores are a tie:
the pair carries no preference, so it is dropped and counted. Round 2 then trains from the round-1
policy, which is also its reference, on these pairs (``03_dpo/round2_<run>/``).

What to watch for: the pairs are ON-POLICY (answers the model actually gives, so the loss works where
the model's probability mass is), but every judge error becomes a training label, and a policy trained
on a judge's labels learns that judge's taste — including its blind spots (reward hacking of the
labeller). On the offline corpus the labeller is the oracle, so 04's gold judge is a second, separate
check.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..infra.atomic import atomic_write_text
from ..infra.checkpoints import verify_checkpoint
from ..run.layout import DPO_DIR, RUN_03
from ..run.prepare import load_prepared_data
from .generation import generate

ONPOLICY_DIR = "onpolicy_pairs"  # runs/<run>/onpolicy_pairs/<first-round run>.jsonl (+ .report.json)


def labeller(config, device=None, reward_model: str | None = None):
    """The best judge available for ``config``'s data: the oracle (offline corpus), else a reward model."""
    from ..data.sources import OFFLINE_SOURCE

    if config.dataset == OFFLINE_SOURCE and reward_model is None:
        from .oracle import OracleJudge

        return OracleJudge()
    from .judges import GPU_REWARD_MODEL, RewardModelJudge

    return RewardModelJudge(reward_model or GPU_REWARD_MODEL, device=device)


def sample_prompts(pairs_train: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct training prompts (the first row of each), in a seeded random order: never a held-out prompt."""
    first: dict[str, dict[str, Any]] = {}
    for row in pairs_train:
        first.setdefault(row["prompt"], row)
    rows = list(first.values())
    random.Random(seed).shuffle(rows)
    return rows[:n]


def label_pairs(
    rows: list[dict[str, Any]], answers: list[list[str]], judge, *, source: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """For each prompt, its best- and worst-scored answers as ``(chosen, rejected)``; ties dropped and counted.

    The pairs have 01's fields (``prompt``, ``chosen``, ``rejected``, ``id``, ``source`` and the prompt's
    ``subset`` / ``topic`` / ``kind``) plus ``judge``, ``chosen_score``, ``rejected_score`` and ``margin``.
    """
    k = len(answers)
    prompts = [r["prompt"] for r in rows for _ in range(k)]
    flat = [a for per_prompt in zip(*answers, strict=True) for a in per_prompt]  # prompt-major: i * k + j
    scores = judge.score(prompts, flat).tolist()
    pairs, ties, empty = [], 0, 0
    for i, row in enumerate(rows):
        scored = sorted(zip(scores[i * k : (i + 1) * k], [a[i] for a in answers]), key=lambda t: t[0])
        (low, worst), (high, best) = scored[0], scored[-1]
        if not best.strip() or not worst.strip():
            empty += 1
            continue
        if high - low < judge.tie_margin:
            ties += 1
            continue
        pairs.append(
            {
                "id": f"{source}-{i:05d}",
                "prompt": row["prompt"],
                "chosen": " " + best,  # the HH convention: the space after "Assistant:" belongs to the response
                "rejected": " " + worst,
                "source": source,
                **{key: row[key] for key in ("subset", "topic", "kind") if key in row},
                "judge": judge.name,
                "chosen_score": high,
                "rejected_score": low,
                "margin": high - low,
            }
        )
    report = {
        "prompts": len(rows),
        "answers_per_prompt": k,
        "judge": judge.name,
        "pairs": len(pairs),
        "ties_dropped": ties,
        "empty_dropped": empty,
        "mean_margin": sum(p["margin"] for p in pairs) / len(pairs) if pairs else None,
        "mean_chosen_score": sum(p["chosen_score"] for p in pairs) / len(pairs) if pairs else None,
        "mean_rejected_score": sum(p["rejected_score"] for p in pairs) / len(pairs) if pairs else None,
        "mean_answer_score": sum(scores) / len(scores),
    }
    return pairs, report


def generate_onpolicy_pairs(
    run_dir: str | Path,
    first: str,
    *,
    n_prompts: int | None = None,
    answers_per_prompt: int = 2,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    reward_model: str | None = None,
    judge=None,
    device=None,
    progress: bool = True,
    log=print,
) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
    """Sample answers from ``03_dpo/<first>`` on training prompts, label them, write the pairs.

    Returns ``(pairs, report, path)``; the pairs are also written (atomically) to
    ``runs/<run>/onpolicy_pairs/<first>.jsonl`` with the report beside them, so they can be read and reused.
    ``judge``: any :class:`~dpo_lab.evaluation.judges.ScoreJudge` instead of :func:`labeller`'s choice.
    """
    from ..infra.console import quiet_hf
    from ..run.pipeline import load_eval_model

    quiet_hf()
    run_dir = Path(run_dir)
    prepared = load_prepared_data(run_dir)
    config = prepared.config
    folder = run_dir / DPO_DIR / first
    verify_checkpoint(folder, produced_by=RUN_03)
    n_prompts = n_prompts or config.round2_prompts
    temperature = config.round2_temperature if temperature is None else temperature
    max_new_tokens = max_new_tokens or config.max_new_tokens
    if answers_per_prompt < 2:
        raise ValueError(f"answers_per_prompt must be >= 2 to make a pair (got {answers_per_prompt})")
    rows = sample_prompts(prepared.splits["pairs_train"], n_prompts, seed=config.seed)
    model = load_eval_model(folder, device)
    answers = [
        generate(
            model,
            prepared.tokenizer,
            [r["prompt"] for r in rows],
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            seed=config.seed + 1000 * k,  # each answer of a prompt from its own seeded draw
            device=device,
            progress=progress,
        )
        for k in range(answers_per_prompt)
    ]
    judge = judge or labeller(config, device=device, reward_model=reward_model)
    pairs, report = label_pairs(rows, answers, judge, source=f"onpolicy:{first}")
    report.update(first_round=first, temperature=temperature, max_new_tokens=max_new_tokens)
    out = run_dir / ONPOLICY_DIR / f"{first}.jsonl"
    atomic_write_text(out, "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in pairs))
    atomic_write_text(out.with_suffix(".report.json"), json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(
        f"on-policy 偏好對：{report['prompts']} 個訓練 prompt × {answers_per_prompt} 個取樣回答，評審 {judge.name}"
        f" → {report['pairs']} 對（平手丟棄 {report['ties_dropped']}、空白回答丟棄 {report['empty_dropped']}）；"
        f"chosen 平均 {report['mean_chosen_score'] or 0:.2f} 分、"
        f"rejected 平均 {report['mean_rejected_score'] or 0:.2f} 分 → {out}"
    )
    return pairs, report, out


def run_round2(
    run_dir: str | Path,
    first: str,
    *,
    n_prompts: int | None = None,
    steps: int | None = None,
    device=None,
    progress: bool = True,
    log=print,
    **generation: Any,
):
    """Generate on-policy pairs from ``03_dpo/<first>`` and train one more DPO round on them from that policy.

    Returns ``(folder, DPOResult, report)``, or ``(None, None, report)`` when every pair was a tie (nothing to
    learn: said in the log, not an error). The round uses the first round's config (beta, loss, lr) with
    ``steps`` (default: the config's ``round2_steps``) and writes ``03_dpo/round2_<first>/``.
    """
    from ..run.config import get_config
    from ..run.pipeline import run_dpo_stage

    run_dir = Path(run_dir)
    pairs, report, path = generate_onpolicy_pairs(
        run_dir, first, n_prompts=n_prompts, device=device, progress=progress, log=log, **generation
    )
    if not pairs:
        log(
            f"{path}：每一對都是平手或空白，沒有可以學的偏好，不訓練第二輪"
            "（模型對同一個 prompt 總是寫出同樣品質的回答：試試更高的 temperature 或更多 prompt）"
        )
        return None, None, report
    recorded = dict(verify_checkpoint(run_dir / DPO_DIR / first, produced_by=RUN_03)["config"])
    recorded["run_dir"] = str(run_dir)  # the folder as it is now (it may have been moved since round 1)
    first_config = get_config(recorded.pop("profile"), **recorded)
    steps = steps or first_config.round2_steps
    folder, result = run_dpo_stage(
        run_dir,
        config=first_config,
        start_from=run_dir / DPO_DIR / first,
        train_pairs=pairs,
        extra_metrics={"onpolicy": report, "inputs_pairs": str(path.relative_to(run_dir))},
        device=device,
        progress=progress,
        dpo_steps=steps,
    )
    return folder, result, report
