def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    z = logits[:, :-1].float()
    labels = input_ids[:, 1:]
    picked = z.gather(2, labels[..., None])[..., 0] - z.logsumexp(dim=2)
    mask = loss_mask[:, 1:].bool()
    total = torch.where(mask, picked, torch.zeros_like(picked)).sum(1)
    return total / mask.sum(1).clamp(min=1) if average else total
