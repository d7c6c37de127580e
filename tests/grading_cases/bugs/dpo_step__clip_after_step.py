# caught by: the gradient norm is clipped to max_grad_norm
def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):
    policy.train()
    optimizer.zero_grad()
    pc, pr = dpo_lab.batch_logprobs(policy, batch)
    with torch.no_grad():
        rc, rr = dpo_lab.batch_logprobs(reference, batch)
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    losses.mean().backward()
    optimizer.step()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)  # too late: the step used the raw gradient
    return {**dpo_lab.dpo_metrics(pc, pr, cr, rj, losses), "grad_norm": float(grad_norm)}
