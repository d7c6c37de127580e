# caught by: loss_mask: 1 on response tokens only
class PreferenceDataCollator:
    def __init__(self, tokenizer, max_length=None):
        self.pad = tokenizer.pad_token_id
        self.max_length = max_length

    def __call__(self, examples):
        rows = []
        for key in ("chosen_ids", "rejected_ids"):
            for ex in examples:
                seq = list(ex["prompt_ids"]) + list(ex[key])
                rows.append(seq[: self.max_length] if self.max_length else seq)
        width = max(map(len, rows))
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return {"input_ids": torch.tensor([r + [self.pad] * (width - len(r)) for r in rows]),
                "attention_mask": attention,
                "loss_mask": attention.clone()}  # the prompt is scored too: the model is trained to write the question
