def dpo_step(policy, reference, batch, optimizer, beta, max_grad_norm=1.0):
    """Two forwards (chosen half, rejected half) with the hand-written, non-lean log-probs."""
    half = batch["input_ids"].shape[0] // 2

    def logps(model, rows):
        out = model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]).logits
        return dpo_lab.sequence_logprobs(out, batch["input_ids"][rows], batch["loss_mask"][rows])

    policy.train()
    optimizer.zero_grad(set_to_none=False)
    chosen, rejected = slice(0, half), slice(half, None)
    pc, pr = logps(policy, chosen), logps(policy, rejected)
    with torch.inference_mode():
        rc, rr = logps(reference, chosen), logps(reference, rejected)
    losses, cr, rj = dpo_loss(pc, pr, rc.clone(), rr.clone(), beta)
    loss = losses.mean()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(list(policy.parameters()), max_norm=max_grad_norm)
    optimizer.step()
    return {**dpo_lab.dpo_metrics(pc, pr, cr, rj, losses), "grad_norm": grad_norm.item()}
