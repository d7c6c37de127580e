# caught by: loss, rewards and updated weights match the reference step
def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):
    policy.train()
    optimizer.zero_grad()
    pr, pc = dpo_lab.batch_logprobs(policy, batch)  # the first half of the rows is CHOSEN, not rejected
    with torch.no_grad():
        rr, rc = dpo_lab.batch_logprobs(reference, batch)
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    losses.mean().backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    return {**dpo_lab.dpo_metrics(pc, pr, cr, rj, losses), "grad_norm": float(grad_norm)}
