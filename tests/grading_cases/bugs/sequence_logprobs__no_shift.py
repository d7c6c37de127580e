# caught by: sum over response tokens
def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # position t scored against token t: predicts the token it already sees
    token_logps = log_probs.gather(-1, input_ids.unsqueeze(-1)).squeeze(-1)
    total = (token_logps * loss_mask).sum(-1)
    return total / loss_mask.sum(-1).clamp(min=1) if average else total
