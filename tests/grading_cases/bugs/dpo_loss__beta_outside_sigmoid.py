# caught by: per-pair losses
def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    losses = -beta * F.logsigmoid(margin)  # beta scales the loss, not the margin: it is no longer a KL strength
    return losses, beta * (policy_chosen_logps - ref_chosen_logps).detach(), beta * (policy_rejected_logps - ref_rejected_logps).detach()
