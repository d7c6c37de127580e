# caught by: sum over response tokens
def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = loss_mask[:, 1:].float().clone()
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # the last scored position of each row: the EOS
    mask[torch.arange(mask.shape[0]), last] = 0  # "EOS is padding": the model is never taught to stop
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total
