"""Our DPO loop equals TRL 1.16's DPOTrainer over 8 optimizer steps (matched optimizer, schedule, clipping, dropout)."""

from __future__ import annotations

import pytest

import dpo_lab
from dpo_lab.dpo import DPOArgs, dpo_train

trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402

STEPS, BATCH, BETA, LR = 8, 2, 0.1, 5e-3
KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")


@pytest.fixture(scope="module")
def sixteen_pairs(tokenizer):
    data, _ = dpo_lab.load_preference_data("offline", split="train", max_pairs=300)
    short = [p for p in data if max(len(tokenizer(p[k])["input_ids"]) for k in ("chosen", "rejected")) <= 48]
    return short[: STEPS * BATCH]


def test_eight_step_loop_matches_trl_log_history(tmp_path, tokenizer, sixteen_pairs):
    # TRL: AdamW (0.9, 0.999, eps 1e-8, wd 0), linear decay to 0, no warmup, clip 1.0, fp32, sequential order.
    trl_policy, trl_ref = dpo_lab.tiny_random_model(tokenizer, seed=1), dpo_lab.tiny_random_model(tokenizer, seed=2)
    config = trl.DPOConfig(
        output_dir=str(tmp_path), beta=BETA, learning_rate=LR, per_device_train_batch_size=BATCH, max_steps=STEPS,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=1.0, logging_steps=1, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        train_sampling_strategy="sequential", save_strategy="no", seed=0,
    )
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in sixteen_pairs]
    trainer = trl.DPOTrainer(model=trl_policy, ref_model=trl_ref, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
    trainer.train()
    trl_log = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert len(trl_log) == STEPS

    ours_policy, ours_ref = dpo_lab.tiny_random_model(tokenizer, seed=1), dpo_lab.tiny_random_model(tokenizer, seed=2)
    args = DPOArgs(beta=BETA, lr=LR, steps=STEPS, batch_size=BATCH, warmup_steps=0, schedule="linear", betas=(0.9, 0.999),
                   max_grad_norm=1.0, shuffle=False, bucket=False, eval_every=10**9, kl_limit=None,
                   train_accuracy_limit=None, progress=False)
    result = dpo_train(ours_policy, ours_ref, tokenizer, dpo_lab.tokenize_pairs(tokenizer, sixteen_pairs), [], args, device="cpu")
    assert len(result.history) == STEPS

    worst = 0.0
    for step, (ours, theirs) in enumerate(zip(result.history, trl_log), start=1):
        for key in KEYS:
            diff = abs(ours[key] - theirs[key])
            worst = max(worst, diff)
            assert diff <= 1e-4, f"step {step} {key}: ours {ours[key]} TRL {theirs[key]}"
        assert ours["lr"] == pytest.approx(theirs["learning_rate"], rel=1e-9)
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-3)
    print(f"\nworst |ours - TRL| over {STEPS} steps and {len(KEYS)} metrics: {worst:.3g}")
    # the run really trained: the loss moved away from its start
    assert abs(result.history[-1]["loss"] - result.history[0]["loss"]) > 1e-3
