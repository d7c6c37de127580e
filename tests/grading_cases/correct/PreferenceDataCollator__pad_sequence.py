from torch.nn.utils.rnn import pad_sequence


class PreferenceDataCollator:
    def __init__(self, tokenizer, max_length=None):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, examples):
        ids, masks = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for ex in examples:
                seq = torch.tensor(list(ex["prompt_ids"]) + list(ex[key]))
                mask = torch.cat([torch.zeros(len(ex["prompt_ids"]), dtype=torch.long), torch.ones(len(ex[key]), dtype=torch.long)])
                ids.append(seq[: self.max_length])
                masks.append(mask[: self.max_length])
        attention = [torch.ones_like(s) for s in ids]
        return {"input_ids": pad_sequence(ids, batch_first=True, padding_value=0),  # any pad id: it is never attended to
                "attention_mask": pad_sequence(attention, batch_first=True, padding_value=0),
                "loss_mask": pad_sequence(masks, batch_first=True, padding_value=0)}
