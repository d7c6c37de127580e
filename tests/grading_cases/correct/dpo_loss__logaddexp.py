def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    margin = chosen_rewards - rejected_rewards
    losses = torch.logaddexp(torch.zeros_like(margin), -margin)  # log(1 + e^{-m}), stable
    return losses, chosen_rewards.detach(), rejected_rewards.detach()
