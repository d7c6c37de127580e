def extract_prompt(chosen_text, rejected_text):
    tag = "\n\nAssistant:"
    if tag not in chosen_text or tag not in rejected_text:
        raise ValueError("missing Assistant tag")
    head_c, _, chosen = chosen_text.rpartition(tag)
    head_r, _, rejected = rejected_text.rpartition(tag)
    if head_c != head_r:
        raise ValueError("prompts differ")
    return head_c + tag, chosen, rejected
