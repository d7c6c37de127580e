# caught by: finite for large margins
def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    losses = -torch.log(torch.sigmoid(beta * (chosen - rejected)))  # sigmoid underflows to 0 → inf loss, NaN gradients
    return losses, beta * chosen.detach(), beta * rejected.detach()
