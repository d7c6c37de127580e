# caught by: implicit rewards = beta * (policy - reference)
def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return losses, chosen.detach(), rejected.detach()  # log-ratios, not rewards: the logged margins are 1/beta too large
