# caught by: per-pair losses
def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen - rejected)).mean()  # one number: per-pair losses are lost (and meaned twice)
    return losses, beta * chosen.detach(), beta * rejected.detach()
