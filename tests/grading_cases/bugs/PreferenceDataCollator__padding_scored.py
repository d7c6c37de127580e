# caught by: loss_mask: 1 on response tokens only
class PreferenceDataCollator:
    def __init__(self, tokenizer, max_length=None):
        self.pad = tokenizer.pad_token_id
        self.max_length = max_length

    def __call__(self, examples):
        rows, n_prompt = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for ex in examples:
                seq = list(ex["prompt_ids"]) + list(ex[key])
                rows.append(seq[: self.max_length] if self.max_length else seq)
                n_prompt.append(len(ex["prompt_ids"]))
        width = max(map(len, rows))
        loss_mask = (torch.arange(width)[None, :] >= torch.tensor(n_prompt)[:, None]).long()  # padding counted as response
        return {"input_ids": torch.tensor([r + [self.pad] * (width - len(r)) for r in rows]),
                "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
                "loss_mask": loss_mask}
