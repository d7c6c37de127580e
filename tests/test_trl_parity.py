"""Our tokenisation, collation, log-probs and loss equal TRL 1.16's DPOTrainer on the same batch.

The reference model is a DIFFERENT model (another seed): with a copy every log-ratio would be 0 and
the loss ln 2 whatever the code did, so the comparison would prove nothing.
"""

from __future__ import annotations

import math

import pytest
import torch

import dpo_lab

trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402

BETA = 0.1


def pairs_of(batch):
    return range(batch["input_ids"].shape[0] // 2)


def make_trl_trainer(tmp_path, tokenizer, pairs, policy_and_reference, **config):
    """TRL's DPOTrainer on ``pairs`` as one batch, fp32 on the CPU; ``config`` adds DPOConfig fields (loss_type …)."""
    policy, reference = policy_and_reference
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        beta=BETA,
        per_device_train_batch_size=len(pairs),
        max_length=1024,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        train_sampling_strategy="sequential",
        logging_steps=1,
        **config,
    )
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    return trl.DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )


@pytest.fixture()
def trl_trainer(tmp_path, tokenizer, pairs, policy_and_reference):
    return make_trl_trainer(tmp_path, tokenizer, pairs, policy_and_reference)


def test_tokenize_pair_matches_trl_token_split(trl_trainer, tokenized_pairs):
    trl_rows = list(trl_trainer.train_dataset)
    assert len(trl_rows) == len(tokenized_pairs)
    for ours, theirs in zip(tokenized_pairs, trl_rows):
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert ours[key] == theirs[key], key


def test_collator_matches_trl_collator(trl_trainer, tokenizer, tokenized_pairs):
    ours = dpo_lab.PreferenceDataCollator(tokenizer)(tokenized_pairs)
    theirs = trl_trainer.data_collator(
        list(trl_trainer.train_dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]))
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert torch.equal(ours["loss_mask"], theirs["completion_mask"])


@pytest.mark.parametrize("lean", [False, True], ids=["plain", "lean"])
def test_logps_and_loss_match_trl(trl_trainer, tokenizer, tokenized_pairs, policy_and_reference, lean):
    policy, reference = policy_and_reference
    batch = dpo_lab.PreferenceDataCollator(tokenizer)(tokenized_pairs)
    trl_batch = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "completion_mask": batch["loss_mask"],
    }

    with torch.no_grad():
        ours_pc, ours_pr = dpo_lab.batch_logprobs(policy, batch, lean=lean)
        ours_rc, ours_rr = dpo_lab.batch_logprobs(reference, batch, lean=lean)
        trl_pc, trl_pr = trl_trainer.compute_ref_log_probs(policy, trl_batch)  # TRL's own log-prob path
        trl_rc, trl_rr = trl_trainer.compute_ref_log_probs(reference, trl_batch)
        trl_loss = trl_trainer.compute_loss(policy, trl_batch)

    logp_diff = max(
        (o - t).abs().max().item()
        for o, t in ((ours_pc, trl_pc), (ours_pr, trl_pr), (ours_rc, trl_rc), (ours_rr, trl_rr))
    )
    print(
        f"\n[{'lean' if lean else 'plain'}] {len(pairs_of(batch))} pairs, |logp| up to "
        f"{ours_pc.abs().max().item():.1f}:"
        f" max |Δ logp| vs TRL = {logp_diff:.3g}"
    )
    assert logp_diff <= 5e-5
    # the models really differ, so the loss is not the trivial ln 2
    assert (ours_pc - ours_rc).abs().min().item() > 1e-2

    losses, chosen_rewards, rejected_rewards = dpo_lab.dpo_loss(ours_pc, ours_pr, ours_rc, ours_rr, BETA)
    # (1) the loss FORMULA: fed TRL's own log-probs, our dpo_loss gives TRL's loss to fp32 rounding
    formula = dpo_lab.dpo_loss(trl_pc, trl_pr, trl_rc, trl_rr, BETA)[0].mean().item()
    # (2) end to end: the losses differ only by what the log-prob differences carry through;
    #     |d loss_i / d logp| = beta * sigmoid(-beta * margin_i) <= beta for each of the four log-probs
    carried = BETA * sum(
        (o - t).abs() for o, t in ((ours_pc, trl_pc), (ours_pr, trl_pr), (ours_rc, trl_rc), (ours_rr, trl_rr))
    )
    diff = abs(losses.mean().item() - trl_loss.item())
    print(
        f"loss ours {losses.mean().item():.8f} TRL {trl_loss.item():.8f} |Δ| = {diff:.3g}"
        f" (carried by the log-prob differences: <= {carried.mean().item():.3g}); formula on TRL's logps |Δ| ="
        f" {abs(formula - trl_loss.item()):.3g}"
    )
    assert abs(formula - trl_loss.item()) <= 1e-6
    assert diff <= carried.mean().item() + 1e-7
    assert abs(losses.mean().item() - math.log(2)) > 1e-3

    metrics = dpo_lab.dpo_metrics(ours_pc, ours_pr, chosen_rewards, rejected_rewards, losses)
    mode = "train" if policy.training else "eval"  # TRL files metrics by the model's mode; ours is in eval (no dropout)
    trl_metrics = {k: v[-1] for k, v in trl_trainer._metrics[mode].items() if k.startswith(("rewards/", "logps/"))}
    assert set(trl_metrics) == {k for k in metrics if k != "loss"}
    for key, value in trl_metrics.items():
        assert metrics[key] == pytest.approx(value, abs=5e-5), key


def test_long_sequences_match_trl_to_fp32_resolution(tmp_path, tokenizer, long_pairs, policy_and_reference):
    """Long responses (|logp| > 512, where one fp32 ulp is 6.1e-5): agree to ≤ 2·eps relative (eps = 2^-23)."""
    policy, reference = policy_and_reference
    args = trl.DPOConfig(
        output_dir=str(tmp_path), beta=BETA, use_cpu=True, bf16=False, report_to="none", gradient_checkpointing=False
    )
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in long_pairs]
    trainer = trl.DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    batch = dpo_lab.PreferenceDataCollator(tokenizer)(dpo_lab.tokenize_pairs(tokenizer, long_pairs))
    trl_batch = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "completion_mask": batch["loss_mask"],
    }
    with torch.no_grad():
        ours = torch.cat(dpo_lab.batch_logprobs(policy, batch))
        theirs = torch.cat(trainer.compute_ref_log_probs(policy, trl_batch))
    assert ours.abs().max() > 512
    ulp = torch.finfo(torch.float32).eps * theirs.abs()  # about one fp32 ulp at this magnitude
    print(
        f"\nlong pairs: max |Δ logp| = {(ours - theirs).abs().max().item():.3g}"
        f" (= {((ours - theirs).abs() / ulp).max().item():.2f} eps·|logp|)"
    )
    assert torch.all((ours - theirs).abs() <= 2 * ulp)


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    """``[chosen rows; rejected rows]`` → ``[rejected rows; chosen rows]``: every label flipped."""
    chosen, rejected = t.chunk(2, dim=0)
    return torch.cat([rejected, chosen])


@pytest.mark.parametrize("loss_type, smoothing", [("ipo", 0.0), ("hinge", 0.0), ("robust", 0.1), ("conservative", 0.1)])
def test_loss_variants_match_trl(
    tmp_path, tokenizer, pairs, tokenized_pairs, policy_and_reference, loss_type, smoothing
):
    """Each variant of :func:`dpo_lab.core.losses.preference_loss` equals TRL 1.16's ``loss_type`` of that name.

    TRL 1.16 has no conservative (cDPO) loss type any more; cDPO is by definition the expected DPO loss
    when each label is flipped with probability ε, so it is checked against TRL's sigmoid loss on the
    batch and on the same batch with chosen and rejected swapped: (1 − ε)·L(batch) + ε·L(swapped).
    IPO is defined on per-token average log-probs (TRL divides by the completion length): ``average=True``.
    """
    from dpo_lab.core.losses import preference_loss

    policy, reference = policy_and_reference
    trainer = make_trl_trainer(
        tmp_path,
        tokenizer,
        pairs,
        policy_and_reference,
        loss_type=["sigmoid" if loss_type == "conservative" else loss_type],
        label_smoothing=smoothing if loss_type == "robust" else 0.0,
    )
    batch = dpo_lab.PreferenceDataCollator(tokenizer)(tokenized_pairs)
    trl_batch = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "completion_mask": batch["loss_mask"],
    }
    average = loss_type == "ipo"
    with torch.no_grad():
        ours = [*dpo_lab.batch_logprobs(policy, batch, average=average)]
        ours += [*dpo_lab.batch_logprobs(reference, batch, average=average)]
        trl_loss = trainer.compute_loss(policy, trl_batch).item()
        if loss_type == "conservative":
            flipped = trainer.compute_loss(policy, {k: _swap_halves(v) for k, v in trl_batch.items()}).item()
            trl_loss = (1 - smoothing) * trl_loss + smoothing * flipped
    losses = preference_loss(*ours, BETA, loss_type, label_smoothing=smoothing)[0]
    sigmoid = preference_loss(*ours, BETA, "sigmoid")[0].mean().item()
    print(f"\n{loss_type}: ours {losses.mean().item():.8f} TRL {trl_loss:.8f} (sigmoid loss {sigmoid:.6f})")
    # the log-probs agree with TRL's to <= 5e-5 (test above); each loss moves by less than 1e-4 relative for that
    assert losses.mean().item() == pytest.approx(trl_loss, rel=1e-4, abs=1e-6)
    assert abs(losses.mean().item() - sigmoid) > 1e-3  # a variant really is a different number here
