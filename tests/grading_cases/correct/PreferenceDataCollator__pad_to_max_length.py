class PreferenceDataCollator:
    """Pads every row to max_length (a fixed shape), not to the longest row: the extra columns are fully masked."""

    def __init__(self, tokenizer, max_length=None):
        self.pad_id = tokenizer.eos_token_id
        self.max_length = max_length

    def __call__(self, examples):
        rows = [(list(ex["prompt_ids"]), list(ex[key])) for key in ("chosen_ids", "rejected_ids") for ex in examples]
        longest = max(len(p) + len(r) for p, r in rows)
        width = self.max_length or longest + 3  # without max_length: still wider than needed
        ids, attention, loss = [], [], []
        for prompt, response in rows:
            seq, mask = (prompt + response)[:width], ([0] * len(prompt) + [1] * len(response))[:width]
            pad = width - len(seq)
            ids.append(seq + [self.pad_id] * pad)
            attention.append([1] * len(seq) + [0] * pad)
            loss.append(mask + [0] * pad)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(attention), "loss_mask": torch.tensor(loss)}
