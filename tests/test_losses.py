"""Log-probs and DPO loss: exact contracts and the invariants every correct implementation satisfies."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import dpo_lab
from dpo_lab import dpo_loss, dpo_metrics, sequence_logprobs, sequence_logprobs_lean

LN2 = math.log(2)


def naive_sequence_logprobs(logits, input_ids, loss_mask):
    """Token-by-token loops in float64: slow, obviously right, independent of the vectorised code."""
    out = []
    for n in range(input_ids.shape[0]):
        total = 0.0
        for t in range(1, input_ids.shape[1]):
            if loss_mask[n, t]:
                total += torch.log_softmax(logits[n, t - 1].double(), dim=-1)[input_ids[n, t]].item()
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture()
def batch(tokenizer, tokenized_pairs):
    return dpo_lab.PreferenceDataCollator(tokenizer)(tokenized_pairs[:6])


def test_sequence_logprobs_matches_naive_loop(batch, policy_and_reference):
    policy, _ = policy_and_reference
    with torch.no_grad():
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = naive_sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])
    for fn in (sequence_logprobs, sequence_logprobs_lean):
        got = fn(logits, batch["input_ids"], batch["loss_mask"])
        assert got.dtype == torch.float32 and got.shape == (12,)
        assert torch.allclose(got.double(), expected, atol=1e-4, rtol=0)


def test_average_is_sum_divided_by_response_length(batch, policy_and_reference):
    policy, _ = policy_and_reference
    with torch.no_grad():
        logits = policy(input_ids=batch["input_ids"]).logits
    total = sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])
    mean = sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"], average=True)
    n_tokens = batch["loss_mask"][:, 1:].sum(-1).float()
    assert torch.allclose(mean, total / n_tokens, atol=1e-6)
    assert torch.allclose(
        sequence_logprobs_lean(logits, batch["input_ids"], batch["loss_mask"], average=True), mean, atol=1e-6
    )


def test_lean_and_plain_paths_agree_in_value_and_gradient(batch, policy_and_reference):
    policy, _ = policy_and_reference
    logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    grads = []
    for fn in (sequence_logprobs, lambda *a: sequence_logprobs_lean(*a, chunk_size=7)):
        leaf = logits.clone().requires_grad_(True)
        value = fn(leaf, batch["input_ids"], batch["loss_mask"])
        value.sum().backward()
        grads.append((value.detach(), leaf.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=5e-5, rtol=0)  # ≤ 1-2 fp32 ulp at |x| ~ 300
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    # the prompt and padding positions get no gradient at all
    unscored = batch["loss_mask"][:, 1:] == 0
    assert grads[1][1][:, :-1][unscored].abs().max().item() == 0.0


def test_extra_right_padding_leaves_logprobs_unchanged(batch, policy_and_reference, tokenizer):
    policy, _ = policy_and_reference
    pad = torch.full((batch["input_ids"].shape[0], 9), tokenizer.pad_token_id)
    zeros = torch.zeros_like(pad)
    padded = {
        "input_ids": torch.cat([batch["input_ids"], pad], 1),
        "attention_mask": torch.cat([batch["attention_mask"], zeros], 1),
        "loss_mask": torch.cat([batch["loss_mask"], zeros], 1),
    }
    with torch.no_grad():
        before = torch.cat(dpo_lab.batch_logprobs(policy, batch))
        after = torch.cat(dpo_lab.batch_logprobs(policy, padded))
    assert torch.allclose(before, after, atol=5e-5, rtol=0)  # fp32 rounding only (1 ulp = 3e-5 here)


def test_logprobs_use_fp32_even_for_half_precision_logits():
    torch.manual_seed(0)
    logits = (torch.randn(2, 5, 50_000) * 30).half()  # fp16 log_softmax underflows such logits to -inf
    ids = torch.randint(0, 50_000, (2, 5))
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]])
    for fn in (sequence_logprobs, sequence_logprobs_lean):
        out = fn(logits, ids, mask)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert torch.allclose(out.double(), naive_sequence_logprobs(logits.float(), ids, mask), rtol=1e-5)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        sequence_logprobs(torch.zeros(2, 4, 10), torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5))


# ------------------------------------------------------------------ the DPO loss


def test_loss_is_ln2_when_policy_equals_reference(batch, policy_and_reference):
    policy, _ = policy_and_reference
    with torch.no_grad():
        pc, pr = dpo_lab.batch_logprobs(policy, batch)
    rc, rr = dpo_lab.reference_logprobs(copy.deepcopy(policy), batch)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert torch.allclose(losses, torch.full_like(losses, LN2), atol=1e-6)
    metrics = dpo_metrics(pc, pr, chosen_rewards, rejected_rewards, losses)
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["rewards/accuracies"] == 0.0  # strict ">": a tie is not a win
    assert metrics["loss"] == pytest.approx(LN2, abs=1e-6)


def test_loss_formula_exact_values():
    pc, pr = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0])
    rc, rr = torch.tensor([-11.0, -19.0]), torch.tensor([-11.0, -16.0])
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 0: logits = 0.5 * ((1) - (-1)) = 1 ; pair 1: 0.5 * ((-1) - (1)) = -1
    assert torch.allclose(cr, torch.tensor([0.5, -0.5])) and torch.allclose(rj, torch.tensor([-0.5, 0.5]))
    assert torch.allclose(losses, torch.tensor([F.softplus(torch.tensor(-1.0)), F.softplus(torch.tensor(1.0))]))
    assert losses.shape == (2,)  # per pair, not reduced


def test_swapping_chosen_and_rejected_negates_the_margin(batch, policy_and_reference, tokenizer, tokenized_pairs):
    policy, reference = policy_and_reference
    swapped = [
        {"prompt_ids": t["prompt_ids"], "chosen_ids": t["rejected_ids"], "rejected_ids": t["chosen_ids"]}
        for t in tokenized_pairs[:6]
    ]
    swapped_batch = dpo_lab.PreferenceDataCollator(tokenizer)(swapped)
    results = []
    for b in (batch, swapped_batch):
        with torch.no_grad():
            pc, pr = dpo_lab.batch_logprobs(policy, b)
        rc, rr = dpo_lab.reference_logprobs(reference, b)
        results.append(dpo_loss(pc, pr, rc, rr, beta=0.2))
    (l1, c1, r1), (l2, c2, r2) = results
    assert torch.allclose(c1 - r1, -(c2 - r2), atol=1e-5)
    assert (c1 - r1).abs().min() > 1e-3  # a real margin, not 0 = -0
    # loss(m) + loss(-m) = softplus(-m) + softplus(m) > 2 ln 2 unless m = 0
    assert torch.all(l1 + l2 > 2 * LN2)


def test_rewards_are_beta_scaled_and_detached():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-6.0], requires_grad=True)
    losses, cr, rj = dpo_loss(pc, pr, torch.tensor([-4.0]), torch.tensor([-4.0]), beta=0.3)
    assert not cr.requires_grad and not rj.requires_grad and losses.requires_grad
    assert cr.item() == pytest.approx(-0.3) and rj.item() == pytest.approx(-0.6)


def test_larger_beta_penalises_the_same_deviation_more():
    # the same log-ratio margin of -2 (policy moved the wrong way): larger beta -> larger loss,
    # i.e. a stronger pull back toward the reference's ranking
    args = (torch.tensor([-12.0]), torch.tensor([-10.0]), torch.tensor([-11.0]), torch.tensor([-11.0]))
    assert dpo_loss(*args, beta=0.5)[0].item() > dpo_loss(*args, beta=0.1)[0].item() > LN2


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_non_positive_beta_is_rejected(beta):
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta)


def test_gradients_reach_the_policy_and_never_the_reference(batch, policy_and_reference):
    policy, reference = policy_and_reference
    policy.train()  # gradients must also flow in train mode
    for module in policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    pc, pr = dpo_lab.batch_logprobs(policy, batch)
    rc, rr = dpo_lab.reference_logprobs(reference, batch)
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
    losses.mean().backward()
    grads = {n: p.grad for n, p in policy.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert sum(g.abs().sum().item() for g in grads.values()) > 0
    assert all(p.grad is None for p in reference.parameters())
    assert not rc.requires_grad and not rr.requires_grad


def test_metrics_keys_are_trl_names(batch, policy_and_reference):
    policy, reference = policy_and_reference
    with torch.no_grad():
        pc, pr = dpo_lab.batch_logprobs(policy, batch)
    rc, rr = dpo_lab.reference_logprobs(reference, batch)
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, 0.1)
    m = dpo_metrics(pc, pr, cr, rj)
    assert set(m) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    }
    assert m["rewards/margins"] == pytest.approx(m["rewards/chosen"] - m["rewards/rejected"], abs=1e-6)
    assert m["rewards/accuracies"] == pytest.approx((cr > rj).float().mean().item())
