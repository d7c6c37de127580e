# caught by: bf16 logits are scored in fp32
def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)  # stays in bf16/fp16: small probabilities are rounded away
    token_logps = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = loss_mask[:, 1:].to(token_logps.dtype)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total
