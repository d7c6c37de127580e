# caught by: two steps in a row (gradients zeroed)
def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):
    policy.train()  # no optimizer.zero_grad(): every step adds the previous steps' gradients
    pc, pr = dpo_lab.batch_logprobs(policy, batch)
    with torch.no_grad():
        rc, rr = dpo_lab.batch_logprobs(reference, batch)
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    losses.mean().backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    return {**dpo_lab.dpo_metrics(pc, pr, cr, rj, losses), "grad_norm": float(grad_norm)}
