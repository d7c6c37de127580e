# caught by: prompt and padding tokens do not count
def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return token_logps.mean(-1) if average else token_logps.sum(-1)  # prompt and padding are scored too
