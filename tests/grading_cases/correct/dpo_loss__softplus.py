def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    pi_logratios = policy_chosen_logps - policy_rejected_logps  # TRL's grouping: (pc - pr) - (rc - rr)
    ref_logratios = ref_chosen_logps - ref_rejected_logps
    losses = F.softplus(-beta * (pi_logratios - ref_logratios))  # softplus(-x) = -log σ(x)
    with torch.no_grad():
        chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
        rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    return losses, chosen_rewards, rejected_rewards
