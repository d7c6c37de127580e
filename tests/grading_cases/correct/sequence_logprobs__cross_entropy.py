def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    n, t, v = logits.shape
    nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, v), input_ids[:, 1:].reshape(-1), reduction="none").view(n, t - 1)
    mask = loss_mask[:, 1:].float()
    total = -(nll * mask).sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1) if average else total
