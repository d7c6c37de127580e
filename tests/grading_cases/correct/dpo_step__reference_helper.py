def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):
    policy.train()
    optimizer.zero_grad(set_to_none=True)
    policy_chosen, policy_rejected = dpo_lab.batch_logprobs(policy, batch, lean=False)
    ref_chosen, ref_rejected = dpo_lab.reference_logprobs(reference, batch)
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    losses.mean().backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    metrics = dpo_lab.dpo_metrics(policy_chosen, policy_rejected, chosen_rewards, rejected_rewards, losses)
    return {**metrics, "grad_norm": float(grad_norm)}
