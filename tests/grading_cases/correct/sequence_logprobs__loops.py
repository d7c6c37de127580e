def sequence_logprobs(logits, input_ids, loss_mask, average=False):
    rows = []
    for i in range(logits.shape[0]):
        total, count = logits.new_zeros((), dtype=torch.float32), 0
        for t in range(1, logits.shape[1]):
            if loss_mask[i, t]:
                total = total + torch.log_softmax(logits[i, t - 1].float(), dim=0)[input_ids[i, t]]
                count += 1
        rows.append(total / max(count, 1) if average else total)
    return torch.stack(rows)
