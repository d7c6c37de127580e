# caught by: gradients flow to the logits
def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    with torch.no_grad():  # "it is only a score": DPO then has nothing to backpropagate through
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logps = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = loss_mask[:, 1:].float()
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total
