class PreferenceDataCollator:
    def __init__(self, tokenizer, max_length=None):
        self.pad_token_id = tokenizer.pad_token_id
        self.max_length = max_length

    def __call__(self, examples):
        pieces = [(ex["prompt_ids"], ex["chosen_ids"]) for ex in examples] + [(ex["prompt_ids"], ex["rejected_ids"]) for ex in examples]
        lengths = [len(p) + len(r) for p, r in pieces]
        if self.max_length is not None:
            lengths = [min(n, self.max_length) for n in lengths]
        out = {"input_ids": torch.full((len(pieces), max(lengths)), self.pad_token_id, dtype=torch.int32),
               "attention_mask": torch.zeros(len(pieces), max(lengths), dtype=torch.bool),
               "loss_mask": torch.zeros(len(pieces), max(lengths), dtype=torch.bool)}
        for row, ((prompt, response), n) in enumerate(zip(pieces, lengths)):
            out["input_ids"][row, :n] = torch.tensor((list(prompt) + list(response))[:n])
            out["attention_mask"][row, :n] = True
            out["loss_mask"][row, len(prompt):n] = True
        return out
