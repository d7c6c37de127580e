# caught by: max_length keeps the first tokens
class PreferenceDataCollator:
    def __init__(self, tokenizer, max_length=None):
        self.pad = tokenizer.pad_token_id
        self.max_length = max_length

    def __call__(self, examples):
        rows, masks = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for ex in examples:
                seq = list(ex["prompt_ids"]) + list(ex[key])
                mask = [0] * len(ex["prompt_ids"]) + [1] * len(ex[key])
                if self.max_length:
                    seq, mask = seq[-self.max_length:], mask[-self.max_length:]  # keeps the END: the prompt is cut away
                rows.append(seq)
                masks.append(mask)
        width = max(map(len, rows))
        pad = lambda r, v: r + [v] * (width - len(r))  # noqa: E731
        return {"input_ids": torch.tensor([pad(r, self.pad) for r in rows]),
                "attention_mask": torch.tensor([pad([1] * len(r), 0) for r in rows]),
                "loss_mask": torch.tensor([pad(m, 0) for m in masks])}
